"""The feed download step: the tenant's feed file fetched into its workdir, outside the DuckDB pool."""

from pathlib import Path

import dagster as dg

from kobi_cpas.defs.catalog_sync.common import GROUP
from kobi_cpas.defs.catalog_sync.step import TenantStep, tenant_step
from kobi_cpas.defs.shared import OWNERS_DATA
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource
from kobi_cpas.sync.feed_download import download_feed


@dg.asset(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"http", "file"},
    partitions_def=tenant_partitions,
    deps=["tenant_registry"],
)
def feed_file(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """The tenant's feed file as fetched now into its workdir, with a JSON manifest (outcome, validators, sha256,
    size, failure message) that feed_snapshot ingests. With no database open (the writers' lock is not held):
    a slow feed server costs only this step, bounded by the tenant's total deadline and size cap
    (feed.download_deadline_seconds, feed.max_bytes). A failed download is recorded, not raised: feed_snapshot
    turns it into a failed snapshot, a FEED_FILE_ERROR diagnostic and a failing feed_file_readable check."""
    return download_feed_file(tenant_step(context, catalog_sync), registry, catalog_sync)


def download_feed_file(
    step: TenantStep, registry: TenantRegistryResource, catalog_sync: CatalogSyncResource
) -> dg.MaterializeResult:
    """Fetch the tenant's feed into its workdir; the feed_file materialization (its manifest as metadata)."""
    reg, tenant = registry.tenant(step.tenant_id)
    manifest = download_feed(reg, tenant, Path(catalog_sync.workdir) / tenant.tenant_id)
    if manifest.ok:
        step.log.info(
            f"feed {manifest.source}: {'not modified' if manifest.not_modified else 'fetched'}, "
            f"{manifest.size_bytes or 0:,} bytes in {manifest.duration_seconds:.1f} s"
        )
    else:
        step.log.warning(manifest.message or "feed download failed")
    return dg.MaterializeResult(
        metadata={
            "outcome": manifest.outcome,
            "source": manifest.source,
            "not_modified": manifest.not_modified,
            "sha256": manifest.sha256 or "",
            "size_bytes": manifest.size_bytes or 0,
            "duration_seconds": round(manifest.duration_seconds, 3),
            "message": manifest.message or "",
        }
    )
