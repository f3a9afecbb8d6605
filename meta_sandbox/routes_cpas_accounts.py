"""Collaborative Ads ad accounts: which of a brand's ad accounts are set up for Collaborative Ads, and the
retailer (partner business) each is dedicated to.

``GET /{business_id}/cpas_business_setup_config``
    CPASBusinessSetupConfig (SDK ``Business.get_cpas_business_setup_config``): id, accepted_collab_ads_tos,
    business{id,name}, ad_accounts (list of strings: the business's ad accounts set up for Collaborative Ads).
    A business without any such account answers an empty ``data``.
``GET /{ad_account_id}/collaborative_ads_partner_businesses``
    CollaborativeAdsPartnerBusinesses (Meta's reference page "Ad Account Collaborative Ads Partner Businesses";
    the SDK defines the object, not the edge): dedicated_partner_business_info{id,name},
    dedicated_partners_business_info, collaborative_ads_partner_businesses_info. Empty ``data`` for an account
    that is not dedicated to a retailer.
Admin ``POST /__sandbox/cpas/ad_accounts/<act_id>/dedicate {"business", "partner_business"}``: the brand
``business`` links (creating it if needed) its ad account to the retailer ``partner_business`` (null: unlinks),
as it does in Collaboration Center when it accepts a segment with ENFORCE_CREATE_NEW_AD_ACCOUNT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox.nodes import AdAccount
from meta_sandbox.server import FAMILY_ADS, FAMILY_CATALOG, RequestContext, Router, request_json_object
from meta_sandbox.state import World

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp


def _business_ref(world: World, business_id: str) -> dict[str, Any]:
    biz = world.businesses.get(business_id)
    return {"id": business_id, "name": biz.name if biz else None}


def register(router: Router) -> None:
    @router.edge(
        "business",
        "cpas_business_setup_config",
        name="cpas.business.setup_config",
        family=FAMILY_CATALOG,
    )
    def setup_config(ctx: RequestContext) -> dict[str, Any]:
        world, biz = ctx.world, ctx.node
        accounts = sorted(
            a.id
            for a in world.ad_accounts.values()
            if a.business_id == biz.id and a.dedicated_partner_business_id is not None
        )
        if not accounts:
            return ctx.paginate([])
        config = {
            "id": world.seeded_graph_id(f"cpas-setup:{biz.id}", "7"),
            "accepted_collab_ads_tos": True,
            "business": _business_ref(world, biz.id),
            "ad_accounts": accounts,
        }
        return ctx.paginate([ctx.select(config, "CPASBusinessSetupConfig", defaults=("id",))])

    @router.edge(
        "ad_account",
        "collaborative_ads_partner_businesses",
        name="cpas.ad_account.partner_businesses",
        family=FAMILY_ADS,
    )
    def partner_businesses(ctx: RequestContext) -> dict[str, Any]:
        account: AdAccount = ctx.node
        partner = account.dedicated_partner_business_id
        if partner is None:
            return ctx.paginate([])
        ref = _business_ref(ctx.world, partner)
        info = {
            "dedicated_partner_business_info": ref,
            "dedicated_partners_business_info": [ref],
            "collaborative_ads_partner_businesses_info": [ref],
        }
        return ctx.paginate(
            [
                ctx.select(
                    info, "CollaborativeAdsPartnerBusinesses", defaults=("dedicated_partner_business_info",)
                )
            ]
        )

    @router.admin(
        "/cpas/ad_accounts/<account_id>/dedicate", name="admin.cpas.ad_account.dedicate", methods=("POST",)
    )
    def dedicate(app: SandboxApp, request: Request, account_id: str) -> Any:
        body = request_json_object(request)
        world = app.world
        with world.lock:
            business = str(body.get("business") or "")
            brand = world.businesses.get(business)
            if brand is None:
                raise KeyError(f"no business {business!r}")
            partner = body.get("partner_business")
            if partner is not None and str(partner) not in world.businesses:
                raise KeyError(f"no business {partner!r}")
            account = world.ad_accounts.get(account_id)
            if account is None:
                account = world.ad_accounts[account_id] = AdAccount(
                    id=account_id,
                    account_id=account_id.removeprefix("act_"),
                    name=str(body.get("name") or f"{brand.name} CPAS"),
                    business_id=business,
                    tenant_id=brand.tenant_id,
                )
            account.dedicated_partner_business_id = None if partner is None else str(partner)
            return {"ok": True, "id": account_id}
