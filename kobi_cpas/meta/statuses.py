"""Effective statuses of ads, ad sets and campaigns, as the Graph API knows them (per level: Meta's
``Campaign.EffectiveStatus``, ``AdSet.EffectiveStatus`` and ``Ad.EffectiveStatus``)."""

from __future__ import annotations

# Every effective status an ad can have: asking for all of them is how Meta returns archived and deleted objects
# too (without an effective_status filter they are left out). Insights filter on ``ad.effective_status``.
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

# Campaigns and ad sets have fewer: a review or billing state, or a paused parent below them, belongs to ads.
EFFECTIVE_STATUSES_BY_LEVEL: dict[str, tuple[str, ...]] = {
    "campaign": ("ACTIVE", "PAUSED", "DELETED", "ARCHIVED", "IN_PROCESS", "WITH_ISSUES"),
    "adset": ("ACTIVE", "PAUSED", "DELETED", "ARCHIVED", "CAMPAIGN_PAUSED", "IN_PROCESS", "WITH_ISSUES"),
    "ad": ALL_EFFECTIVE_STATUSES,
}


def effective_statuses(level: str, *, deleted: bool = True) -> tuple[str, ...]:
    """The effective statuses objects of ``level`` (campaign, adset, ad) can have, DELETED only if asked."""
    values = EFFECTIVE_STATUSES_BY_LEVEL[level]
    return values if deleted else tuple(s for s in values if s != "DELETED")
