"""What a catalog sync step needs from Dagster for one tenant. The asset steps build it from their context (one
tenant, the run's partition); the fleet runs build one per tenant they sync, so both run the same step code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from kobi_cpas.resources import CatalogSyncResource


@dataclass(frozen=True)
class TenantStep:
    tenant_id: str
    run_id: str
    run_tags: Mapping[str, str]
    log: Any  # the run's DagsterLogManager
    instance: dg.DagsterInstance

    def tag_is_true(self, tag: str) -> bool:
        return self.run_tags.get(tag, "").lower() == "true"


def tenant_step(context: dg.AssetExecutionContext, catalog_sync: CatalogSyncResource) -> TenantStep:
    """The step of an asset run for its partition's tenant, holding the tenant's sync lock for the rest of the run
    (so a fleet run never syncs the same catalog meanwhile)."""
    catalog_sync.hold_shard(context.partition_key, context.log)
    return TenantStep(context.partition_key, context.run_id, context.run.tags, context.log, context.instance)
