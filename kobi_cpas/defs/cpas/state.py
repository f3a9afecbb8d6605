"""The registry's partnerships completed with what Kobi recorded (``cpas_state.segments`` and
``cpas_state.ad_accounts``), for every CPAS and insights asset and job: a segment Kobi created or found, and the
dedicated ad account Meta shows, are used without anyone copying their ids into the registry. Schedules, which
never open the work database, fill the ad accounts the same way from the published file."""

from kobi_cpas.cpas.state import (
    SegmentRecord,
    published_ad_accounts,
    read_ad_accounts,
    read_segments,
    with_recorded_ad_accounts,
    with_recorded_segments,
)
from kobi_cpas.registry import LoadedRegistry
from kobi_cpas.registry.models import Tenant
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource


def tenant_with_state(
    registry: TenantRegistryResource, warehouse: WarehouseResource, tenant_id: str
) -> tuple[Tenant, dict[str, SegmentRecord]]:
    """The tenant, each retailer's missing segment id and dedicated ad account filled from the recorded state,
    and the recorded segments."""
    _, tenant = registry.tenant(tenant_id)
    with warehouse.connection() as con:
        recorded = read_segments(con, tenant.tenant_id)
        accounts = read_ad_accounts(con, tenant.tenant_id)
    return with_recorded_ad_accounts(with_recorded_segments(tenant, recorded), accounts), recorded


def tenants_with_published_accounts(reg: LoadedRegistry, warehouse: WarehouseResource) -> list[Tenant]:
    """The registry's tenants, each retailer's missing dedicated ad account filled from what the daily
    reconciliation last published (no Meta call, no work database: what the daemon may read)."""
    observed = published_ad_accounts(warehouse.read_published)
    return [with_recorded_ad_accounts(t, observed.get(t.tenant_id, {})) for t in reg.tenants]
