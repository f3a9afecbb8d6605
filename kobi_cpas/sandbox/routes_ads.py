"""Ad account routes: ``GET /act_{id}``."""

from __future__ import annotations

from typing import Any

from kobi_cpas.sandbox.server import FAMILY_ADS, RequestContext, Router
from kobi_cpas.sandbox.state import AdAccount, World


def ad_account_fields(world: World, account: AdAccount) -> dict[str, Any]:
    business = world.businesses.get(account.business_id or "")
    return {
        "id": account.id,
        "account_id": account.account_id,
        "name": account.name,
        "currency": account.currency,
        "timezone_name": account.timezone_name,
        "account_status": account.account_status,
        "business": {"id": business.id, "name": business.name} if business else None,
    }


def register(router: Router) -> None:
    @router.node("ad_account", name="ad_account.get", family=FAMILY_ADS)
    def get_ad_account(ctx: RequestContext) -> dict[str, Any]:
        # Meta's default fields for an ad account are account_id and id.
        return ctx.select(ad_account_fields(ctx.world, ctx.node), "AdAccount", defaults=("account_id", "id"))
