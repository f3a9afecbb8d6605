"""The ``api`` onboarding mode: Kobi itself creates the tenant's catalog segment from the retailer's catalog and
shares it with the brand's business, on the daily CPAS run, with the same safeguards as the segment job.

- Nothing is created from a rule that matches no item of the tenant's feed snapshot (an empty segment cannot be
  advertised), nor before a feed snapshot exists.
- The segment is looked up by Kobi's name under the retailer's business before it is created, and the creating
  POST is sent once (:func:`~kobi_cpas.cpas.segments.find_or_create_segment`): two runs never create two.
- Meta's 2310068 (parent catalog not Collaborative Ads compliant) becomes a call to action, not a failed run.
- A known segment (declared or recorded) is never re-created: when Meta no longer has it, the reconciliation
  reports ``segment_missing`` and a person decides.

The brand's acceptance stays a person's step in Collaboration Center: Meta offers no API for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kobi_cpas.cpas.graph import GraphClient, get_or_none
from kobi_cpas.cpas.segments import find_or_create_segment, segment_name, share_segment
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas.registry.filters import describe_rule
from kobi_cpas.registry.models import CpasRetailer, OnboardingMode, Tenant

# The brand advertises on the segment; MANAGE is the retailer's to grant by hand.
API_PERMITTED_TASKS = ("ADVERTISE",)


@dataclass(frozen=True)
class ApiSegmentStep:
    """What the api-mode step did for one partnership."""

    retailer: str
    segment_id: str | None  # the segment the partnership now uses (None: none yet)
    origin: str | None  # created | found (under the retailer's business) | None (known before, or none)
    shared_now: bool
    blocked: str | None  # why Kobi did not create or share it, as a call to action (None: nothing blocked)
    owner_business_id: str | None = None
    segment_name: str | None = None


def wants_api_segment(r: CpasRetailer) -> bool:
    return r.onboarding_mode == OnboardingMode.api


def ensure_api_segment(
    client: GraphClient, tenant: Tenant, r: CpasRetailer, expected_count: int | None
) -> ApiSegmentStep:
    """Create (or find) and share the segment of an ``api`` partnership. ``r.catalog_segment_id`` is the
    segment already known for the pair (declared or recorded); ``expected_count`` the rule on the feed snapshot
    (None: no snapshot yet)."""
    pair = f"{tenant.tenant_id} x {r.retailer}"
    if r.catalog_segment_id:
        segment = get_or_none(client, r.catalog_segment_id, {"fields": "id,is_catalog_segment"})
        if segment is None or not segment.get("is_catalog_segment"):
            # reported by the reconciliation (segment_missing / not_a_segment); never replaced unasked
            return ApiSegmentStep(r.retailer, r.catalog_segment_id, None, False, None)
        known = ApiSegmentStep(r.retailer, r.catalog_segment_id, None, False, None)
        try:
            return replace(known, shared_now=_share(client, tenant, r.catalog_segment_id))
        except MetaAPIError as exc:
            return replace(
                known, blocked=f"Kobi could not share segment {r.catalog_segment_id} of {pair}: {exc}"
            )
    missing = [
        n
        for n, v in (
            ("retailer_business_id", r.retailer_business_id),
            ("parent_catalog_id", r.parent_catalog_id),
            ("segment_filter", r.segment_filter),
        )
        if not v
    ]
    if missing:
        return _blocked(
            r, f"Kobi cannot create the segment of {pair}: set {', '.join(missing)} in the registry."
        )
    if expected_count is None:
        return _blocked(
            r,
            f"Kobi creates the segment of {pair} once the tenant's feed has a snapshot (the rule is checked "
            "against it first): run the tenant's catalog sync.",
        )
    if expected_count == 0:
        return _blocked(
            r,
            f"Kobi did not create the segment of {pair}: its rule {describe_rule(r.segment_filter)} matches no "
            "item of the tenant's feed snapshot, and an empty segment cannot be advertised. Fix segment_filter "
            "in the registry.",
        )
    name = segment_name(tenant.tenant_id, r.retailer)
    assert r.retailer_business_id and r.parent_catalog_id and r.segment_filter  # checked above
    try:
        segment_id, created = find_or_create_segment(
            client,
            business_id=r.retailer_business_id,
            parent_catalog_id=r.parent_catalog_id,
            name=name,
            filter=r.segment_filter,
        )
    except MetaAPIError as exc:
        # 2310068 and the like: the message carries Meta's code and the fix; the run goes on for other pairs
        return _blocked(r, f"Kobi could not create the segment of {pair}: {exc}")
    # Recorded even when sharing fails below: the segment exists now and must not be created again.
    step = ApiSegmentStep(
        r.retailer,
        segment_id,
        "created" if created else "found",
        False,
        None,
        owner_business_id=r.retailer_business_id,
        segment_name=name,
    )
    try:
        return replace(step, shared_now=_share(client, tenant, segment_id))
    except MetaAPIError as exc:
        return replace(step, blocked=f"Kobi could not share segment {segment_id} of {pair}: {exc}")


def _share(client: GraphClient, tenant: Tenant, segment_id: str) -> bool:
    return share_segment(client, segment_id, tenant.business_id, API_PERMITTED_TASKS)


def _blocked(r: CpasRetailer, why: str) -> ApiSegmentStep:
    return ApiSegmentStep(r.retailer, None, None, False, why)
