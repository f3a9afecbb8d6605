"""Check specs of the diagnostics domain (results emitted by catalog_diagnostics)."""

import dagster as dg

from kobi_cpas.diagnostics.checks import FATAL_INGESTION_CHECK, FRESHNESS_CHECK, HIGH_SHARE_CHECK, PIXEL_CHECK

catalog_diagnostics_check_specs = [
    dg.AssetCheckSpec(
        FATAL_INGESTION_CHECK,
        asset="catalog_diagnostics",
        description="ERROR when the latest feed uploads or batch requests had fatal ingestion errors.",
    ),
    dg.AssetCheckSpec(
        HIGH_SHARE_CHECK,
        asset="catalog_diagnostics",
        description="WARN when the share of items with HIGH-priority problems is above the tenant's "
        "high_problem_share_threshold (default 5 %).",
    ),
    dg.AssetCheckSpec(
        PIXEL_CHECK,
        asset="catalog_diagnostics",
        description="WARN when no pixel or app is connected to the catalog.",
    ),
    dg.AssetCheckSpec(
        FRESHNESS_CHECK,
        asset="catalog_diagnostics",
        description="WARN when the item-level diagnostics were last polled more than 2 hours ago.",
    ),
]
