"""Retailer discovery for ``cpas_retailer_directory``: the Collaborative Ads directory, each tenant's suggested
partners and the collaboration requests Kobi sent on its behalf.

Rows (:class:`DirectoryRow`) carry no personal data: the contact name, email and phone of a collaboration
request stay on Meta. ``tenant_id`` is None for directory rows (they are the same for every tenant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kobi_cpas.cpas.graph import GraphClient, get_or_none, post_once
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas.registry.models import Tenant

Source = Literal["directory", "suggested", "request"]
REQUEST_FIELDS = "id,brands,receiver_business,requester_agency_or_brand,source,status,creation_time"
OPEN_REQUEST_STATUSES = frozenset({"PENDING", "IN_PROGRESS", "APPROVED"})


@dataclass(frozen=True)
class DirectoryRow:
    source: Source
    tenant_id: str | None
    merchant_business_id: str
    merchant_name: str | None
    countries: tuple[str, ...]
    status: str | None  # suggested: the recommendation status; request: PENDING / APPROVED / ...
    object_id: str | None  # recommendation id or collaboration request id (None for directory rows)
    brands: tuple[str, ...]
    requester: str | None  # AGENCY | BRAND | MERCHANT (requests)
    created_time: str | None
    observed_at: datetime

    def as_record(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["countries"] = ",".join(self.countries)
        out["brands"] = ",".join(self.brands)
        return out


def read_merchants(client: GraphClient, *, page_size: int = 100) -> list[dict[str, Any]]:
    """Every retailer of ``collaborative_ads_directory`` (id, name, countries), following the nested paging."""
    first = client.get(
        "collaborative_ads_directory",
        {"fields": f"collaborative_ads_merchants.limit({page_size}){{id,name,countries}}"},
    )
    edge = first.get("collaborative_ads_merchants") or {}
    merchants = list(edge.get("data") or [])
    nxt = (edge.get("paging") or {}).get("next")
    if nxt:
        merchants.extend(client.paginate(str(nxt)))
    return merchants


def _names(merchants: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(m["id"]): str(m.get("name")) for m in merchants if m.get("id")}


def _name_of(client: GraphClient, names: dict[str, str], business_id: str) -> str | None:
    if business_id not in names:
        node = get_or_none(client, business_id, {"fields": "id,name"})
        names[business_id] = (node or {}).get("name") or ""
    return names[business_id] or None


def directory_rows(
    client: GraphClient, tenants: Sequence[Tenant], *, now: datetime | None = None
) -> list[DirectoryRow]:
    """Directory rows (tenant_id None), then per tenant its suggested partners and collaboration requests."""
    observed = now or datetime.now(UTC)
    merchants = read_merchants(client)
    names = _names(merchants)
    rows = [
        DirectoryRow(
            source="directory",
            tenant_id=None,
            merchant_business_id=str(m["id"]),
            merchant_name=m.get("name"),
            countries=tuple(m.get("countries") or ()),
            status=None,
            object_id=None,
            brands=(),
            requester=None,
            created_time=None,
            observed_at=observed,
        )
        for m in merchants
    ]
    for tenant in tenants:
        rows += suggested_partner_rows(client, tenant, names=names, now=observed)
        rows += collaboration_request_rows(client, tenant, names=names, now=observed)
    return rows


def suggested_partner_rows(
    client: GraphClient, tenant: Tenant, *, names: dict[str, str] | None = None, now: datetime | None = None
) -> list[DirectoryRow]:
    """``GET /{business_id}?fields=collaborative_ads_suggested_partners`` for the tenant's business."""
    observed = now or datetime.now(UTC)
    names = names if names is not None else {}
    node = client.get(
        tenant.business_id,
        {
            "fields": "collaborative_ads_suggested_partners.limit(100){id,merchant_business_id,brands,countries,"
            "status,status_reason}"
        },
    )
    edge = node.get("collaborative_ads_suggested_partners") or {}
    recs = list(edge.get("data") or [])
    nxt = (edge.get("paging") or {}).get("next")
    if nxt:
        recs.extend(client.paginate(str(nxt)))
    rows = []
    for rec in recs:
        merchant = str(rec.get("merchant_business_id") or "")
        rows.append(
            DirectoryRow(
                source="suggested",
                tenant_id=tenant.tenant_id,
                merchant_business_id=merchant,
                merchant_name=_name_of(client, names, merchant) if merchant else None,
                countries=tuple(rec.get("countries") or ()),
                status=rec.get("status"),
                object_id=str(rec["id"]),
                brands=tuple(rec.get("brands") or ()),
                requester=None,
                created_time=None,
                observed_at=observed,
            )
        )
    return rows


def collaboration_request_rows(
    client: GraphClient, tenant: Tenant, *, names: dict[str, str] | None = None, now: datetime | None = None
) -> list[DirectoryRow]:
    """The collaboration requests of the tenant's business (status PENDING, APPROVED, DECLINED, ...)."""
    observed = now or datetime.now(UTC)
    names = names if names is not None else {}
    rows = []
    for req in client.paginate(
        f"{tenant.business_id}/collaborative_ads_collaboration_requests",
        {"fields": REQUEST_FIELDS, "limit": 100},
    ):
        receiver = req.get("receiver_business") or {}
        rid = str(receiver.get("id") or "")
        if receiver.get("name"):
            names.setdefault(rid, str(receiver["name"]))
        rows.append(
            DirectoryRow(
                source="request",
                tenant_id=tenant.tenant_id,
                merchant_business_id=rid,
                merchant_name=_name_of(client, names, rid) if rid else None,
                countries=(),
                status=req.get("status"),
                object_id=str(req["id"]),
                brands=tuple(req.get("brands") or ()),
                requester=req.get("requester_agency_or_brand"),
                created_time=req.get("creation_time"),
                observed_at=observed,
            )
        )
    return rows


def send_collaboration_request(
    client: GraphClient,
    tenant: Tenant,
    *,
    receiver_business_id: str,
    brands: Sequence[str],
    contact_email: str,
    contact_first_name: str,
    contact_last_name: str,
    phone_number: str,
    requester_agency_or_brand: str = "AGENCY",
) -> tuple[str, bool]:
    """Ask a retailer to collaborate, unless an open request (PENDING/APPROVED) to it exists. -> (id, sent).

    The creating POST is sent once: after an error that may have been applied (timeout, 5xx) the open request is
    looked up again before the error counts, so two launches never send two requests."""
    open_id = _open_request(client, tenant.business_id, receiver_business_id)
    if open_id is not None:
        return open_id, False
    data = {
        "brands": list(brands),
        "contact_email": contact_email,
        "contact_first_name": contact_first_name,
        "contact_last_name": contact_last_name,
        "phone_number": phone_number,
        "receiver_business": receiver_business_id,
        "requester_agency_or_brand": requester_agency_or_brand,
    }
    try:
        answer = post_once(client, f"{tenant.business_id}/collaborative_ads_collaboration_requests", data)
    except MetaAPIError as exc:
        if exc.retryable:
            again = _open_request(client, tenant.business_id, receiver_business_id)
            if again is not None:
                return again, True
        raise
    return str(answer["id"]), True


def _open_request(client: GraphClient, business_id: str, receiver_business_id: str) -> str | None:
    for req in client.paginate(
        f"{business_id}/collaborative_ads_collaboration_requests",
        {"fields": "id,receiver_business,status", "limit": 100},
    ):
        receiver = (req.get("receiver_business") or {}).get("id")
        if receiver == receiver_business_id and str(req.get("status")) in OPEN_REQUEST_STATUSES:
            return str(req["id"])
    return None
