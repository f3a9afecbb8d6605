"""The replace plan: what the next replace upload would do per shard, and its deletion guard."""

import dagster as dg

from kobi_cpas.defs.catalog_sync.checks import (
    ADOPTED_GUARD,
    DELETION_GUARD,
    OVERRIDE_TAG,
    replace_plan_check_specs,
)
from kobi_cpas.defs.catalog_sync.common import GROUP
from kobi_cpas.defs.shared import OWNERS_DATA, WRITES_ROWS_OF, md_table
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource
from kobi_cpas.sync.methods import plan_replace


@dg.asset(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"duckdb"},
    partitions_def=tenant_partitions,
    deps=["feed_snapshot"],
    check_specs=replace_plan_check_specs,
    metadata={WRITES_ROWS_OF: "none"},
)
def replace_feed_plan(
    context: dg.AssetExecutionContext, registry: TenantRegistryResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """What the next replace upload would do per shard: items sent, live items at Meta, items Meta would delete,
    live items it would flip to out of stock (retention), items adopted from the brand's existing catalog whose
    retention has passed (deleted through the Batch API), and unconfirmed surplus deletions of earlier replaces.
    Its blocking check (the deletion guard) stops an empty upload, one deleting or flipping too much of the
    catalog, and any replace while Meta's surplus deletions wait for a person's confirmation. Adopted items'
    deletions have their own, non-blocking check: too many are held (not sent) and the replace goes on."""
    _, tenant = registry.tenant(context.partition_key)
    with warehouse.connection() as con:
        plans = plan_replace(con, tenant)
    override = context.run.tags.get(OVERRIDE_TAG, "").lower() == "true"
    blocked = [p.blocked_reason for p in plans if p.blocked_reason]
    rows = [
        (
            p.shard,
            p.items,
            p.live,
            p.deletions,
            p.flips,
            p.adopted_deletions,
            sum(s.surplus for s in p.surplus),
            f"{p.delete_share:.1%}",
        )
        for p in plans
    ]
    surplus = sum(s.surplus for p in plans for s in p.surplus)
    passed = not blocked or override
    desc = None
    if blocked:
        desc = ("OVERRIDDEN by run tag: " if override else "BLOCKED: ") + "; ".join(blocked)
        if not override:
            desc += f". If this is intended, re-run with the run tag {OVERRIDE_TAG}=true."
    adopted_due = sum(p.adopted_deletions for p in plans)
    held = [r for p in plans if (r := p.adopted_hold_reason)]
    adopted_desc = None
    if held:
        adopted_desc = ("OVERRIDDEN by run tag: " if override else "HELD: ") + (
            f"tenant '{tenant.tenant_id}': " + "; ".join(held)
        )
        if not override:
            adopted_desc += (
                f". The replace upload of Kobi's feed goes on; the {adopted_due:,} adopted item(s) stay out of "
                f"stock, not deleted, until a person checks them and runs with the run tag {OVERRIDE_TAG}=true "
                "(or sets sync.adopted_items: keep)."
            )
    return dg.MaterializeResult(
        metadata={
            "items_to_send": sum(p.items for p in plans),
            "live_items": sum(p.live for p in plans),
            "deletions": sum(p.deletions for p in plans),
            "retention_flips": sum(p.flips for p in plans),
            "adopted_deletions": adopted_due,
            "adopted_deletions_held": adopted_due if held and not override else 0,
            "unconfirmed_surplus_deletions": surplus,
            "plan": dg.MetadataValue.md(
                md_table(
                    rows,
                    ["shard", "items", "live", "deletions", "flips", "adopted deletions", "surplus", "share"],
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=DELETION_GUARD,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=desc,
                metadata={
                    "deletions": sum(p.deletions for p in plans),
                    "retention_flips": sum(p.flips for p in plans),
                    "unconfirmed_surplus_deletions": surplus,
                    "live": sum(p.live for p in plans),
                    "max_delete_share": tenant.sync.max_delete_share,
                    "overridden": override and bool(blocked),
                },
            ),
            dg.AssetCheckResult(
                check_name=ADOPTED_GUARD,
                passed=not held or override,
                severity=dg.AssetCheckSeverity.WARN,
                description=adopted_desc,
                metadata={
                    "adopted_deletions": adopted_due,
                    "adopted_held_out_of_stock": sum(p.adopted_held for p in plans),
                    "held": len(held) > 0 and not override,
                    "max_delete_share": tenant.sync.max_delete_share,
                },
            ),
        ],
    )
