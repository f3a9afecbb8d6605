"""Effective statuses of ads, ad sets and campaigns, as the Graph API knows them."""

from __future__ import annotations

# Every effective status an ad object can have: asking for all of them is how Meta returns archived and
# deleted objects too (without an effective_status filter they are left out).
ALL_EFFECTIVE_STATUSES: tuple[str, ...] = (
    "ACTIVE",
    "PAUSED",
    "DELETED",
    "ARCHIVED",
    "PENDING_REVIEW",
    "DISAPPROVED",
    "PREAPPROVED",
    "PENDING_BILLING_INFO",
    "CAMPAIGN_PAUSED",
    "ADSET_PAUSED",
    "IN_PROCESS",
    "WITH_ISSUES",
)
NOT_DELETED_STATUSES: tuple[str, ...] = tuple(s for s in ALL_EFFECTIVE_STATUSES if s != "DELETED")
