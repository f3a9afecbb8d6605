"""Names shared by the catalog sync steps: their group, the run tag that serialises one catalog's syncs, and the
asset arguments of the steps that talk to Meta and write DuckDB."""

from kobi_cpas.defs.shared import OWNERS_DATA, SHORT_WRITES
from kobi_cpas.defs.tenants.partitions import tenant_partitions

GROUP = "catalog_sync"
SHARD_TAG = "kobi/catalog_shard"
SYNC_KINDS = {"meta", "duckdb"}
# Shared by the steps that send items to Meta. They wait on Meta (upload processing, batch handles) for minutes,
# and the writers' lock held meanwhile would stop every other tenant's writes: they open the work database only
# for short transactions between the waits.
SYNC_ASSET = dict(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds=SYNC_KINDS,
    partitions_def=tenant_partitions,
    metadata={SHORT_WRITES: "waits on Meta outside the work database; writes in short transactions"},
)
