"""The external asset of the Meta writes dry runs held back."""

import dagster as dg

from kobi_cpas.defs.catalog_sync.common import GROUP
from kobi_cpas.defs.shared import OWNERS_DATA, table_definition_metadata
from kobi_cpas.warehouse.tables import META_DRY_RUN_WRITES

meta_dry_run_writes = dg.AssetSpec(
    "meta_dry_run_writes",
    description="The Meta writes (POST or DELETE) dry runs did not send, one row each. No step computes it: "
    "the Meta and warehouse resources of any step of a dry run (run tag kobi/dry_run=true) append its rows, "
    "so it is an external asset here, owned by no step.",
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"duckdb"},
    metadata=table_definition_metadata(META_DRY_RUN_WRITES),
)
