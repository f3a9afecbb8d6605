"""Names shared by the catalog sync steps: their group, the run tag that serialises one catalog's syncs, and the
asset arguments of the steps that talk to Meta and write DuckDB."""

from kobi_cpas.defs.shared import DUCKDB_POOL, OWNERS_DATA
from kobi_cpas.defs.tenants.partitions import tenant_partitions

GROUP = "catalog_sync"
SHARD_TAG = "kobi/catalog_shard"
SYNC_KINDS = {"meta", "duckdb"}
# Shared by the assets that talk to Meta and write DuckDB for one tenant catalog.
SYNC_ASSET = dict(
    group_name=GROUP, owners=OWNERS_DATA, kinds=SYNC_KINDS, partitions_def=tenant_partitions, pool=DUCKDB_POOL
)
