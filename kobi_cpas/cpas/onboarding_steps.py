"""Where each step of a partnership's onboarding stands (``cpas_onboarding_steps``): the product spec's decision
matrix (retailer x step x API/hybrid/manual) with the status Kobi observed and the next action.

Statuses: ``done``; ``todo`` (someone acts next: a person, or a Kobi job a person launches); ``waiting`` (on the
retailer, or on an earlier step); ``blocked`` (something is wrong; the partnership's drift says what).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kobi_cpas.registry.onboarding_steps import ONBOARDING_STEPS, step_mode

OPEN_REQUEST = ("PENDING", "IN_PROGRESS")
SEGMENT_BLOCKERS = ("api_step_blocked", "segment_missing", "not_a_segment", "unshared")
ACCOUNT_BLOCKERS = ("ad_account_missing", "ad_account_mixed_retailers")


@dataclass(frozen=True)
class PartnershipFacts:
    """What Kobi knows of one partnership: its ``cpas_partnerships`` row and a few counts around it."""

    tenant_id: str
    retailer: str
    retailer_name: str
    onboarding_mode: str  # the partnership's api | hybrid | manual
    step_overrides: dict[str, str]
    partnership_status: str  # observed: pending | accepted | revoked
    drift: tuple[str, ...]
    segment_id: str | None
    shared: bool  # the segment is shared with the brand's business (accepted or not)
    partnership_action: str | None  # cpas_partnerships.next_action
    dedicated_ad_account_id: str | None
    in_directory: bool  # the retailer's business is listed in Meta's Collaborative Ads directory
    request_status: str | None  # the brand's latest collaboration request to the retailer (None: none)
    people: int | None  # users of the brand assigned to the segment (None: not read)
    campaigns: int  # campaigns of the dedicated ad account promoting the segment


def _step(f: PartnershipFacts, key: str) -> tuple[str, str | None]:
    """(status, next action) of one step."""
    who = f.retailer_name
    accepted = f.partnership_status == "accepted"
    if key == "retailer_program":
        if f.segment_id or f.in_directory:
            return "done", None
        return "todo", (
            f"{who} is not in Meta's Collaborative Ads directory (cpas_retailer_directory): ask {who} whether it "
            "runs Collaborative Ads, and for its business id (retailer_business_id in the registry)."
        )
    if key == "collaboration_request":
        if f.shared or accepted or (f.request_status or "").upper() == "APPROVED":
            return "done", None
        if (f.request_status or "").upper() in OPEN_REQUEST:
            return "waiting", f"The collaboration request to {who} is {f.request_status}: {who} answers it."
        if step_mode(key, f.onboarding_mode, f.step_overrides) == "api":
            return "todo", (
                f"Launch send_collaboration_request_job for {f.tenant_id} and {who}'s business "
                "(it is never sent twice)."
            )
        return "todo", f"Ask {who} (its partner manager) to run Collaborative Ads with the brand."
    if key == "segment_shared":
        if f.shared or accepted:
            return "done", None
        if any(d in f.drift for d in SEGMENT_BLOCKERS):
            return "blocked", f.partnership_action
        # api: Kobi's daily CPAS run creates and shares it; otherwise a person asks the retailer
        api = step_mode(key, f.onboarding_mode, f.step_overrides) == "api"
        return ("waiting" if api else "todo"), f.partnership_action
    if key == "brand_accepts":
        if accepted:
            return "done", None
        if f.shared:
            return "todo", f.partnership_action
        return "waiting", f"Waits for {who}'s segment to be shared with the brand."
    if key == "dedicated_ad_account":
        if any(d in f.drift for d in ACCOUNT_BLOCKERS):
            return "blocked", f.partnership_action
        if f.dedicated_ad_account_id:
            return "done", None
        return "todo", (
            f"Create an ad account in the brand's Business Manager used for {who} only, then set "
            f"dedicated_ad_account_id for {f.tenant_id} x {f.retailer} in the registry."
        )
    if key == "people_assigned":
        if f.people:
            return "done", None
        if not accepted:
            return "waiting", "Waits for the brand to accept the segment."
        return "todo", (
            f"Launch assign_catalog_users_job for {f.tenant_id} (retailer {f.retailer}) with the brand's people."
        )
    # campaign
    if f.campaigns:
        return "done", None
    if not accepted or not f.dedicated_ad_account_id:
        return "waiting", "Waits for the accepted segment and the dedicated ad account."
    return (
        "todo",
        f"Launch create_cpas_campaign_job for {f.tenant_id} and {f.retailer} (created PAUSED, after QC).",
    )


def onboarding_step_rows(f: PartnershipFacts, observed_at: datetime) -> list[dict[str, Any]]:
    """The ``cpas_onboarding_steps`` rows of one partnership, in onboarding order."""
    rows = []
    for order, step in enumerate(ONBOARDING_STEPS, start=1):
        status, action = _step(f, step.key)
        rows.append(
            {
                "tenant_id": f.tenant_id,
                "retailer": f.retailer,
                "step_order": order,
                "step": step.key,
                "meta_mode": step.meta_mode,
                "mode": step_mode(step.key, f.onboarding_mode, f.step_overrides),
                "status": status,
                "next_action": action,
                "observed_at": observed_at,
            }
        )
    return rows
