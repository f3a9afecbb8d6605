"""The registry's partnerships completed with what Kobi recorded (``cpas_state.segments``), for every CPAS
asset and job: a segment Kobi created or found is used without anyone copying its id into the registry."""

from kobi_cpas.cpas.state import SegmentRecord, read_segments, with_recorded_segments
from kobi_cpas.registry.models import Tenant
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource


def tenant_with_state(
    registry: TenantRegistryResource, warehouse: WarehouseResource, tenant_id: str
) -> tuple[Tenant, dict[str, SegmentRecord]]:
    """The tenant, each retailer's missing segment id filled from the recorded state, and that state."""
    _, tenant = registry.tenant(tenant_id)
    with warehouse.connection() as con:
        recorded = read_segments(con, tenant.tenant_id)
    return with_recorded_segments(tenant, recorded), recorded
