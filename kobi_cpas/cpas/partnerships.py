"""Reconcile a tenant x retailer partnership declared in the registry with what Meta shows.

:func:`reconcile_partnership` reads the segment (``GET /{segment_id}``), who it is shared with (``agencies`` =
accepted, ``collaborative_ads_share_settings`` = every share) and the dedicated ad account's campaigns, then
returns one :class:`PartnershipRow` (the ``cpas_partnerships`` columns) with the *observed* status, drift codes
and the exact next action for a person.

Observed status:

* ``accepted`` — the segment is in ``agencies`` for the brand's business (Meta's agencies edge returns
  Business objects: the tasks and collab terms of a share cannot be read back, so none are reported);
* ``pending`` — the segment is shared (share settings) but the brand has not accepted it, or not shared / not
  created yet while the registry does not claim it was accepted;
* ``revoked`` — the registry says accepted (or revoked) but the segment is gone or no longer shared.

Drift codes (:data:`DRIFT_CODES`): ``segment_missing``, ``not_a_segment``, ``unshared``, ``segment_empty``, ``count_mismatch``, ``ad_account_missing``, ``ad_account_mixed_retailers`` and
``registry_outdated`` (Meta shows accepted while the registry says pending or revoked) and ``api_step_blocked``
(an ``api`` partnership whose segment Kobi could not create or share: the reason is the next action),
``ad_account_mismatch`` (the registry declares a dedicated ad account while Meta shows the brand's account for
the retailer is another one; the declared one is used) and ``ad_account_unknown`` (accepted, but no dedicated ad
account declared nor shown by Meta).

The dedicated ad account: the registry's ``dedicated_ad_account_id`` when declared, else the one Meta shows
dedicated to the retailer's business (``dedicated_accounts``, read by
:func:`~kobi_cpas.cpas.accounts.read_dedicated_accounts`); ``ad_account_id_source`` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kobi_cpas.cpas.accounts import AccountUsage, read_account_usage
from kobi_cpas.cpas.graph import GraphClient, get_or_none
from kobi_cpas.cpas.retailers import DEFAULT_DIRECTORY, RetailerDirectory
from kobi_cpas.cpas.segments import SegmentShares, read_segment_shares, segment_name
from kobi_cpas.registry.filters import describe_rule
from kobi_cpas.registry.models import CpasRetailer, Tenant

DRIFT_CODES = (
    "segment_missing",
    "not_a_segment",
    "unshared",
    "segment_empty",
    "count_mismatch",
    "ad_account_missing",
    "ad_account_mixed_retailers",
    "registry_outdated",
    "api_step_blocked",
    "ad_account_mismatch",
    "ad_account_unknown",
)


@dataclass(frozen=True)
class PartnershipRow:
    """One row of ``cpas_partnerships``. Tuples become comma-separated text in :meth:`as_record`."""

    tenant_id: str
    retailer: str
    catalog_segment_id: str | None
    parent_catalog_id: str | None
    segment_filter: str | None  # canonical JSON of the registry's rule
    partnership_status: str  # observed: pending | accepted | revoked
    declared_status: str  # the registry's partnership_status
    onboarding_mode: str  # api | manual | hybrid
    dedicated_ad_account_id: str | None
    shared_with_business_id: str | None  # the brand business the segment is shared with (None: not shared)
    permitted_tasks: tuple[str, ...]  # not readable from Meta (see the module docstring): always empty
    collab_terms: tuple[str, ...]  # likewise
    segment_product_count: int | None  # Meta's product_count of the segment
    expected_product_count: int | None  # the filter evaluated on Kobi's feed snapshot
    drift: tuple[str, ...]
    next_action: str | None  # exact instructions for a person (None: nothing to do)
    observed_at: datetime
    segment_id_source: str | None = (
        None  # registry | created | found (set by the caller, who knows the state)
    )
    observed_ad_account_ids: tuple[str, ...] = ()  # the brand's accounts Meta shows dedicated to the retailer
    ad_account_id_source: str | None = None  # registry | observed (None: no account)

    def as_record(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("permitted_tasks", "collab_terms", "drift", "observed_ad_account_ids"):
            out[k] = ",".join(out[k])
        return out


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def count_drifts(meta_count: int | None, expected: int | None, tolerance: float, tolerance_abs: int) -> bool:
    """True when Meta's count is outside ``expected`` ± max(tolerance x expected, tolerance_abs)."""
    if meta_count is None or expected is None:
        return False
    return abs(meta_count - expected) > max(tolerance * expected, tolerance_abs)


def reconcile_partnership(
    client: GraphClient,
    tenant: Tenant,
    retailer_cfg: CpasRetailer,
    expected_count: int | None = None,
    tolerance: float = 0.02,
    *,
    tolerance_abs: int = 0,
    retailers: RetailerDirectory = DEFAULT_DIRECTORY,
    now: datetime | None = None,
    account_usage: AccountUsage | None = None,
    api_blocked: str | None = None,
    dedicated_accounts: Mapping[str, tuple[str, ...]] | None = None,
) -> PartnershipRow:
    """Observe one partnership on Meta and say what to do about it.

    ``expected_count``: the segment filter evaluated on the tenant's feed snapshot
    (:func:`kobi_cpas.registry.filters.expected_membership`), or None to skip the count check. ``tolerance`` is a
    share of it, ``tolerance_abs`` an absolute number of products; the larger applies. ``account_usage`` may
    be passed when the caller already read the ad account (:func:`~kobi_cpas.cpas.accounts.read_account_usage`).
    ``api_blocked``: why the api-mode step (:mod:`~kobi_cpas.cpas.api_onboarding`) could not create or share the
    segment, reported as the ``api_step_blocked`` drift with that call to action. ``dedicated_accounts``: the
    brand's Collaborative Ads ad accounts by the retailer business Meta shows each dedicated to (None: not read;
    :func:`~kobi_cpas.cpas.accounts.read_dedicated_accounts`); ``retailer_cfg``'s ``dedicated_ad_account_id`` is
    the declared one, which wins.
    """
    observed_at = now or datetime.now(UTC)
    declared_account = retailer_cfg.dedicated_ad_account_id
    r = retailer_cfg
    retailer_name = retailers.name(r.retailer)
    declared = _enum_text(r.partnership_status)
    mode = _enum_text(r.onboarding_mode)
    brand_biz = tenant.business_id
    brand = get_or_none(client, brand_biz, {"fields": "id,name"})
    brand_name = (brand or {}).get("name") or tenant.name or tenant.tenant_id
    drift: list[str] = []
    actions: list[str] = []

    segment: dict[str, Any] | None = None
    shares = SegmentShares()
    if r.catalog_segment_id:
        segment = get_or_none(
            client, r.catalog_segment_id, {"fields": "id,name,is_catalog_segment,product_count,business"}
        )
        if segment is None:
            drift.append("segment_missing")
        elif not segment.get("is_catalog_segment"):
            drift.append("not_a_segment")
        else:
            shares = read_segment_shares(client, r.catalog_segment_id)
    elif declared == "accepted":
        drift.append("segment_missing")  # accepted, but no segment declared nor recorded
    seg_ok = segment is not None and bool(segment.get("is_catalog_segment"))
    share_state = shares.status_for(brand_biz) if seg_ok else "not_shared"
    tasks: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()

    if share_state == "accepted":
        observed = "accepted"
    elif share_state == "pending":
        observed = "pending"
    elif declared in ("accepted", "revoked"):
        observed = "revoked"
        if seg_ok:
            drift.append("unshared")
    else:
        observed = "pending"
    if observed == "accepted" and declared != "accepted":
        drift.append("registry_outdated")

    meta_count: int | None = None
    if seg_ok:
        raw = segment.get("product_count") if segment else None
        meta_count = int(raw) if raw is not None else None
        if meta_count == 0:
            drift.append("segment_empty")
        elif count_drifts(meta_count, expected_count, tolerance, tolerance_abs):
            drift.append("count_mismatch")

    usage: AccountUsage | None = None
    retailer_biz = r.retailer_business_id or ((segment or {}).get("business") or {}).get("id")
    observed_accounts = tuple((dedicated_accounts or {}).get(str(retailer_biz), ())) if retailer_biz else ()
    account_source = "registry" if declared_account else ("observed" if observed_accounts else None)
    if declared_account is None and observed_accounts:
        r = r.model_copy(update={"dedicated_ad_account_id": observed_accounts[0]})
    if r.dedicated_ad_account_id:
        usage = account_usage or read_account_usage(client, r.dedicated_ad_account_id)
        if not usage.exists:
            drift.append("ad_account_missing")
        else:
            foreign = (
                usage.foreign_segments([retailer_biz])
                if retailer_biz
                else ([] if len(usage.segment_owner_business_ids) <= 1 else list(usage.catalogs.values()))
            )
            if foreign:
                drift.append("ad_account_mixed_retailers")

    if declared_account and observed_accounts and declared_account not in observed_accounts:
        drift.append("ad_account_mismatch")
    if not r.dedicated_ad_account_id and "accepted" in (observed, declared):
        drift.append("ad_account_unknown")
    ctx = _Ctx(
        tenant,
        r,
        retailer_name,
        brand_name,
        segment,
        expected_count,
        meta_count,
        usage,
        retailer_biz,
        observed_accounts,
    )
    if api_blocked:
        drift.append("api_step_blocked")
        actions.append(api_blocked)
    if not (api_blocked and not seg_ok):  # else the blocked step already says what to do
        actions.extend(_status_actions(ctx, observed, share_state, mode))
    for code in drift:
        fn = _DRIFT_ACTIONS.get(code)
        if fn is not None:
            actions.append(fn(ctx))
    return PartnershipRow(
        tenant_id=tenant.tenant_id,
        retailer=r.retailer,
        catalog_segment_id=r.catalog_segment_id,
        parent_catalog_id=r.parent_catalog_id,
        segment_filter=describe_rule(r.segment_filter) if r.segment_filter is not None else None,
        partnership_status=observed,
        declared_status=declared,
        onboarding_mode=mode,
        dedicated_ad_account_id=r.dedicated_ad_account_id,
        shared_with_business_id=brand_biz if share_state != "not_shared" else None,
        permitted_tasks=tasks,
        collab_terms=terms,
        segment_product_count=meta_count,
        expected_product_count=expected_count,
        drift=tuple(dict.fromkeys(drift)),
        next_action=" ".join(dict.fromkeys(a for a in actions if a)) or None,
        observed_at=observed_at,
        observed_ad_account_ids=observed_accounts,
        ad_account_id_source=account_source,
    )


# -- next actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    tenant: Tenant
    r: CpasRetailer
    retailer_name: str
    brand_name: str
    segment: dict[str, Any] | None
    expected: int | None
    meta_count: int | None
    usage: AccountUsage | None
    retailer_biz: str | None
    observed_accounts: tuple[str, ...] = ()

    @property
    def seg(self) -> str:
        return self.r.catalog_segment_id or "(none yet)"

    @property
    def brand(self) -> str:
        return f"{self.brand_name} (business {self.tenant.business_id})"

    @property
    def act(self) -> str:
        return self.r.dedicated_ad_account_id or "a new dedicated ad account"


def _accept_instructions(c: _Ctx) -> str:
    return (
        f"In Meta Business Suite > Collaboration Center, select {c.brand}, Partners, click 'Accept assets' for "
        f"{c.retailer_name}'s catalog segment {c.seg}, accept the Terms of Service and the retailer's terms "
        "(create a new ad account / share ad performance access) — then set partnership_status: accepted in "
        f"the registry for {c.tenant.tenant_id} x {c.r.retailer}."
    )


def _create_segment_text(c: _Ctx) -> str:
    rule = (
        f"with filter {describe_rule(c.r.segment_filter)}"
        if c.r.segment_filter is not None
        else f"filtered on {c.brand_name}'s brand (set segment_filter in the registry to record it)"
    )
    parent = c.r.parent_catalog_id or "(parent_catalog_id missing in the registry)"
    return f"segment '{segment_name(c.tenant.tenant_id, c.r.retailer)}' from parent catalog {parent} {rule}"


def _status_actions(c: _Ctx, observed: str, share_state: str, mode: str) -> list[str]:
    """What to do for a pending partnership (accepted and revoked ones are covered by their drift codes).

    Modes: ``api`` — Kobi creates and shares the segment through the API; ``manual``/``hybrid`` — the retailer
    creates and shares it. The brand's acceptance is always a person in Collaboration Center (no API).
    """
    if observed != "pending":
        return []
    if share_state == "pending":
        prefix = ""
        if mode == "api":
            prefix = (
                f"Kobi has created and shared {c.retailer_name}'s segment {c.seg}; Meta has no API for the "
                "brand's acceptance. "
            )
        return [prefix + _accept_instructions(c)]
    segment_exists = c.segment is not None and bool(c.segment.get("is_catalog_segment"))
    if mode == "api":
        if segment_exists:
            return [
                f"Kobi will share segment {c.seg} with {c.brand} (ADVERTISE) automatically on the next run; then "
                + _accept_instructions(c)[0].lower()
                + _accept_instructions(c)[1:]
            ]
        missing = [
            n
            for n, v in (
                ("retailer_business_id", c.r.retailer_business_id),
                ("parent_catalog_id", c.r.parent_catalog_id),
                ("segment_filter", c.r.segment_filter),
            )
            if not v
        ]
        if missing:
            return [
                f"Kobi cannot create {c.retailer_name}'s segment automatically: set {', '.join(missing)} for "
                f"{c.tenant.tenant_id} x {c.r.retailer} in the registry."
            ]
        return [
            f"Kobi will create the {_create_segment_text(c)} under {c.retailer_name}'s business "
            f"{c.r.retailer_business_id} and share it with {c.brand} (ADVERTISE) automatically on the next run; "
            "then the brand accepts it in Collaboration Center. Kobi records the segment id (cpas_state): the "
            "registry needs none."
        ]
    if segment_exists:
        return [
            f"Ask {c.retailer_name} to share catalog segment {c.seg} with business {c.tenant.business_id} "
            f"({c.brand_name}) with the ADVERTISE task; then "
            + _accept_instructions(c)[0].lower()
            + _accept_instructions(c)[1:]
        ]
    return [
        f"Ask {c.retailer_name} to create a catalog {_create_segment_text(c)} with {c.brand_name}'s products and "
        f"share it with business {c.tenant.business_id} with the ADVERTISE task; then put its id in "
        f"catalog_segment_id for {c.tenant.tenant_id} x {c.r.retailer} in the registry."
    ]


def _a_missing(c: _Ctx) -> str:
    if c.r.catalog_segment_id is None:
        return (
            f"No catalog segment is known for {c.tenant.tenant_id} x {c.r.retailer} (none in the registry, none "
            "recorded by Kobi) although the registry says accepted: launch create_catalog_segment_job for the pair "
            f"(it finds {c.retailer_name}'s segment by name or creates it, and records it), or set "
            "catalog_segment_id in the registry."
        )
    return (
        f"Catalog segment {c.seg} no longer exists on Meta (deleted by {c.retailer_name}, or Kobi lost access): ask "
        f"{c.retailer_name} to recreate and re-share it with {c.brand}, then update catalog_segment_id in the "
        f"registry; meanwhile pause the campaigns in {c.act}."
    )


def _a_not_segment(c: _Ctx) -> str:
    return (
        f"{c.seg} is a regular catalog, not a catalog segment: fix catalog_segment_id for {c.tenant.tenant_id} x "
        f"{c.r.retailer} in the registry (use the segment id {c.retailer_name} shared)."
    )


def _a_unshared(c: _Ctx) -> str:
    return (
        f"{c.retailer_name} no longer shares segment {c.seg} with {c.brand}: contact {c.retailer_name} to re-share "
        f"it (ADVERTISE), or set partnership_status: revoked in the registry and pause the campaigns in {c.act}."
    )


def _a_empty(c: _Ctx) -> str:
    exp = f" (Kobi expects {c.expected} from the feed)" if c.expected is not None else ""
    return (
        f"Segment {c.seg} has 0 products{exp}: check that {c.brand_name}'s products are listed and live on "
        f"{c.retailer_name} and that the segment filter {describe_rule(c.r.segment_filter)} matches them; ask "
        f"{c.retailer_name} to fix the segment filter if needed. Ads on an empty segment deliver nothing."
    )


def _a_mismatch(c: _Ctx) -> str:
    return (
        f"Segment {c.seg} has {c.meta_count} products on Meta but Kobi expects {c.expected} from the latest feed "
        f"snapshot (filter {describe_rule(c.r.segment_filter)}): compare the brand's marketplace listings on "
        f"{c.retailer_name} with the feed, and ask {c.retailer_name} to align the segment filter if it differs "
        "from the registry's segment_filter."
    )


def _a_account_missing(c: _Ctx) -> str:
    return (
        f"Ad account {c.act} does not exist or Kobi's system user lost access: create a new dedicated ad account "
        f"for {c.retailer_name} in {c.brand}'s Business Manager, assign Kobi's system user to it, and update "
        "dedicated_ad_account_id in the registry."
    )


def _a_mixed(c: _Ctx) -> str:
    others: list[str] = []
    if c.usage is not None:
        foreign = (
            c.usage.foreign_segments([c.retailer_biz]) if c.retailer_biz else list(c.usage.catalogs.values())
        )
        others = [
            f"segment {p.catalog_id} of {p.owner_name or p.owner_business_id} (campaigns {', '.join(p.campaign_ids)})"
            for p in foreign
        ]
    return (
        f"Ad account {c.act} promotes catalog segments of another retailer ({'; '.join(others)}): a dedicated ad "
        f"account is linked to one retailer only — move those campaigns to that retailer's own dedicated ad "
        f"account and keep {c.act} for {c.retailer_name}."
    )


def _a_account_mismatch(c: _Ctx) -> str:
    shown = ", ".join(c.observed_accounts)
    return (
        f"The registry declares {c.act} as {c.brand_name}'s ad account dedicated to {c.retailer_name}, but Meta "
        f"shows {shown} dedicated to {c.retailer_name} (the brand's Collaborative Ads setup): if {shown} is the "
        f"right account, set dedicated_ad_account_id: {c.observed_accounts[0]} for {c.tenant.tenant_id} x "
        f"{c.r.retailer} in the registry, or remove it (Kobi then uses the account Meta shows); otherwise link "
        f"{c.act} to {c.retailer_name} in Collaboration Center. Until then Kobi uses {c.act} (the registry wins)."
    )


def _a_account_unknown(c: _Ctx) -> str:
    return (
        f"No ad account is known for {c.tenant.tenant_id} x {c.r.retailer}: none in the registry and Meta shows no "
        f"Collaborative Ads ad account of {c.brand} dedicated to {c.retailer_name}. In Collaboration Center, "
        f"create (or pick) {c.brand_name}'s ad account dedicated to {c.retailer_name} and assign Kobi's system "
        "user to it: the next daily run records it (cpas_state.ad_accounts), or set dedicated_ad_account_id in "
        "the registry."
    )


def _a_registry(c: _Ctx) -> str:
    return (
        f"Meta shows segment {c.seg} accepted by {c.brand}: set partnership_status: accepted for "
        f"{c.tenant.tenant_id} x {c.r.retailer} in the registry."
    )


_DRIFT_ACTIONS: dict[str, Callable[[_Ctx], str]] = {
    "segment_missing": _a_missing,
    "not_a_segment": _a_not_segment,
    "unshared": _a_unshared,
    "segment_empty": _a_empty,
    "count_mismatch": _a_mismatch,
    "ad_account_missing": _a_account_missing,
    "ad_account_mixed_retailers": _a_mixed,
    "registry_outdated": _a_registry,
    "ad_account_mismatch": _a_account_mismatch,
    "ad_account_unknown": _a_account_unknown,
}
