"""Collaborative Ads admin knobs (``/__sandbox/cpas/...``; client: ``SandboxAdmin.cpas``) and the deletes they
share with tests. See routes_cpas for the list."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from meta_sandbox.server import (
    Router,
    request_json_object,
)
from meta_sandbox.state import (
    Ad,
    Campaign,
    Catalog,
    SegmentShare,
    World,
)

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from meta_sandbox.server import SandboxApp

from meta_sandbox.cpas_common import (
    shares_of,
)

# -- admin knobs -------------------------------------------------------------------------------------------


def _catalog(world: World, catalog_id: str) -> Catalog:
    catalog = world.catalogs.get(catalog_id)
    if catalog is None:
        raise KeyError(f"no catalog {catalog_id}")
    return catalog


def delete_catalog(world: World, catalog_id: str) -> None:
    """Remove a catalog or segment with its shares, assigned users and product sets."""
    _catalog(world, catalog_id)
    del world.catalogs[catalog_id]
    for sid in [s.id for s in world.segment_shares.values() if s.catalog_id == catalog_id]:
        del world.segment_shares[sid]
    for pid in [p.id for p in world.product_sets.values() if p.catalog_id == catalog_id]:
        del world.product_sets[pid]
    world.catalog_assigned_users.pop(catalog_id, None)


def delete_ad_account(world: World, account_id: str) -> None:
    if account_id not in world.ad_accounts:
        raise KeyError(f"no ad account {account_id}")
    del world.ad_accounts[account_id]
    for coll in (world.campaigns, world.adsets, world.ads, world.adcreatives):
        for oid in [o.id for o in coll.values() if o.account_id == account_id]:
            del coll[oid]


def register(router: Router) -> None:
    @router.admin("/cpas/config", name="admin.cpas.config.get", methods=("GET",))
    def get_config(app: SandboxApp, request: Request) -> Any:
        cfg = app.world.cpas_config
        return {
            "auto_accept_shares": cfg.auto_accept_shares,
            "request_approval_seconds": cfg.request_approval_seconds,
        }

    @router.admin("/cpas/config", name="admin.cpas.config.set", methods=("POST",))
    def set_config(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            cfg = app.world.cpas_config
            if "auto_accept_shares" in body:
                cfg.auto_accept_shares = bool(body["auto_accept_shares"])
            if "request_approval_seconds" in body:
                cfg.request_approval_seconds = float(body["request_approval_seconds"])
            return {
                "auto_accept_shares": cfg.auto_accept_shares,
                "request_approval_seconds": cfg.request_approval_seconds,
            }

    def share_for(world: World, catalog_id: str, business_id: Any) -> SegmentShare:
        _catalog(world, catalog_id)
        if not business_id:
            raise ValueError("body needs 'business'")
        share = next((s for s in shares_of(world, catalog_id) if s.business_id == str(business_id)), None)
        if share is None:
            raise KeyError(f"catalog {catalog_id} is not shared with business {business_id}")
        return share

    @router.admin("/cpas/segments/<catalog_id>/accept", name="admin.cpas.segment.accept", methods=("POST",))
    def accept(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            share = share_for(app.world, catalog_id, body.get("business"))
            share.accepted = True
            share.accepted_time = app.world.now()
            return {"ok": True, "share_id": share.id}

    @router.admin("/cpas/segments/<catalog_id>/unshare", name="admin.cpas.segment.unshare", methods=("POST",))
    def unshare(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            share = share_for(app.world, catalog_id, body.get("business"))
            del app.world.segment_shares[share.id]
            return {"ok": True}

    @router.admin(
        "/cpas/catalogs/<catalog_id>/product_count", name="admin.cpas.catalog.count", methods=("POST",)
    )
    def force_count(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            count = body.get("count")
            catalog.product_count_override = None if count is None else max(0, int(count))
            return {"ok": True, "product_count": catalog.product_count}

    @router.admin(
        "/cpas/catalogs/<catalog_id>/compliance", name="admin.cpas.catalog.compliance", methods=("POST",)
    )
    def compliance(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            catalog.collaborative_ads_compliant = bool(body.get("compliant", True))
            return {"ok": True, "collaborative_ads_compliant": catalog.collaborative_ads_compliant}

    @router.admin("/cpas/catalogs/<catalog_id>/items", name="admin.cpas.catalog.items", methods=("POST",))
    def load_items(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError("body needs 'items': a list of objects")
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            if body.get("replace", True):
                catalog.items.clear()
            for item in items:
                rid = str(item.get("retailer_id") or item.get("id") or "")
                if not rid:
                    raise ValueError("every item needs 'id' (or 'retailer_id')")
                fields = {k: str(v) for k, v in item.items() if v is not None and k != "retailer_id"}
                fields["id"] = rid
                catalog.items[rid] = fields
            return {"ok": True, "items": len(catalog.items)}

    @router.admin("/cpas/catalogs/<catalog_id>", name="admin.cpas.catalog.delete", methods=("DELETE",))
    def remove_catalog(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        with app.world.lock:
            delete_catalog(app.world, catalog_id)
            return {"ok": True}

    @router.admin("/cpas/ad_accounts/<account_id>", name="admin.cpas.ad_account.delete", methods=("DELETE",))
    def remove_ad_account(app: SandboxApp, request: Request, account_id: str) -> Any:
        with app.world.lock:
            delete_ad_account(app.world, account_id)
            return {"ok": True}

    @router.admin(
        "/cpas/ad_accounts/<account_id>/campaigns", name="admin.cpas.ad_account.inject", methods=("POST",)
    )
    def inject_campaign(app: SandboxApp, request: Request, account_id: str) -> Any:
        body = request_json_object(request)
        world = app.world
        with world.lock:
            account = world.ad_accounts.get(account_id)
            if account is None:
                raise KeyError(f"no ad account {account_id}")
            segment_id = str(body.get("segment_id") or "")
            _catalog(world, segment_id)
            status = str(body.get("status") or "ACTIVE").upper()
            campaign = Campaign(
                id=world.new_id(),
                account_id=account_id,
                name=str(body.get("name") or f"Injected campaign on {segment_id}"),
                objective=str(body.get("objective") or "PRODUCT_CATALOG_SALES"),
                status=status,
                effective_status=status,
                promoted_object={"product_catalog_id": segment_id},
                created_time=world.now() - timedelta(days=1),
                tenant_id=account.tenant_id,
                retailer=world.retailer_of_catalog(world.catalogs[segment_id]),
            )
            world.campaigns[campaign.id] = campaign
            return {"ok": True, "id": campaign.id}

    @router.admin("/cpas/ads/<ad_id>/patch", name="admin.cpas.ad.patch", methods=("POST",))
    def patch_ad(app: SandboxApp, request: Request, ad_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            ad: Ad | None = app.world.ads.get(ad_id)
            if ad is None:
                raise KeyError(f"no ad {ad_id}")
            if "creative" in body:
                if not isinstance(body["creative"], dict):
                    raise ValueError("'creative' must be an object (merged into the ad's creative)")
                ad.creative = {**ad.creative, **body["creative"]}
            if "tracking_specs" in body:
                ad.tracking_specs = body["tracking_specs"]
            if "status" in body:
                ad.status = ad.effective_status = str(body["status"]).upper()
            return {"ok": True}

    @router.admin("/cpas/product_sets/<set_id>/live", name="admin.cpas.product_set.live", methods=("POST",))
    def product_set_live(app: SandboxApp, request: Request, set_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            ps = app.world.product_sets.get(set_id)
            if ps is None:
                raise KeyError(f"no product set {set_id}")
            live = body.get("live")
            ps.live_override = None if live is None else bool(live)
            return {"ok": True, "live": app.world.product_set_is_live(ps)}

    @router.admin(
        "/cpas/collaboration_requests/<request_id>/status",
        name="admin.cpas.collaboration_request.status",
        methods=("POST",),
    )
    def request_status(app: SandboxApp, request: Request, request_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            req = app.world.collab_requests.get(request_id)
            if req is None:
                raise KeyError(f"no collaboration request {request_id}")
            status = body.get("status")
            req.status_override = str(status).upper() if status else None
            return {"ok": True, "status": app.world.collab_request_status(req)}
