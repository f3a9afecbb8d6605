"""Asset jobs of the catalog sync; each re-reads the feed first (feed_file downloads it outside the DuckDB pool,
feed_snapshot ingests it; a no-op when the source is unchanged).

Selections name the step assets; ``required_multi_asset_neighbors`` adds the other tables the same step writes
(feed_snapshot also materializes feed_items and feed_item_issues, catalog_syncs also catalog_item_state)."""

import dagster as dg

# Each job is a chain of steps that run one after another: in one process, a run pays for loading Python,
# Dagster and the code location once instead of once per step (the multiprocess default), which is most of a
# small run's cost and what bounds how many tenants one machine serves.
IN_PROCESS = dg.in_process_executor

catalog_replace_job = dg.define_asset_job(
    "catalog_replace_job",
    executor_def=IN_PROCESS,
    selection=dg.AssetSelection.assets(
        "feed_file", "feed_snapshot", "replace_feed_plan", "replace_feed_upload", "catalog_syncs"
    ).required_multi_asset_neighbors(),
    description="Snapshot the feed, check the deletion guard, upload the full replace feed, record the result.",
)
catalog_update_job = dg.define_asset_job(
    "catalog_update_job",
    executor_def=IN_PROCESS,
    selection=dg.AssetSelection.assets(
        "feed_file", "feed_snapshot", "update_feed_upload", "catalog_syncs"
    ).required_multi_asset_neighbors(),
    description="Snapshot the feed and upload new and changed items (update_only).",
)
catalog_batch_job = dg.define_asset_job(
    "catalog_batch_job",
    executor_def=IN_PROCESS,
    selection=dg.AssetSelection.assets(
        "feed_file", "feed_snapshot", "price_stock_batch", "catalog_syncs"
    ).required_multi_asset_neighbors(),
    description="Snapshot the feed and send volatile-only changes through the Batch API.",
)
catalog_feed_change_job = dg.define_asset_job(
    "catalog_feed_change_job",
    executor_def=IN_PROCESS,
    selection=dg.AssetSelection.assets(
        "feed_file", "feed_snapshot", "update_feed_upload", "price_stock_batch", "catalog_syncs"
    ).required_multi_asset_neighbors(),
    description="Started by the feed source sensor: snapshot, then the incremental syncs the delta needs.",
)
catalog_sync_status_job = dg.define_asset_job(
    "catalog_sync_status_job",
    executor_def=IN_PROCESS,
    selection=dg.AssetSelection.assets("catalog_syncs").required_multi_asset_neighbors(),
    description="Ask Meta about uploads and batch handles still processing and confirm their items.",
)
