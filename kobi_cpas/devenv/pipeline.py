"""Materialize the whole asset graph for every tenant against the configured instance (what `make run` does).

Assets are grouped by partitions definition and run group by group in dependency order; a partitioned group
runs once per partition key. Every run is recorded in the Dagster instance (Postgres), exactly like runs launched
from the UI, so `make dev` shows them afterwards.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.devenv.instance import owner_tags
from kobi_cpas.meta.dry_run import DRY_RUN_SCRATCH_TAG, DRY_RUN_TAG
from kobi_cpas.registry import load_registry

log = logging.getLogger(__name__)


@dataclass
class PipelineReport:
    runs: list[tuple[str, str | None, bool, float]] = field(
        default_factory=list
    )  # (group, partition, ok, secs)
    run_ids: list[str] = field(default_factory=list)
    # Why each failed run failed: (group, partition, the first step failure's message, without its traceback).
    failures: list[tuple[str, str | None, str]] = field(default_factory=list)
    # Set for a dry run: the scratch key its runs share (the work database copy under .kobi_work/dry_run/).
    dry_run_scratch: str | None = None

    @property
    def ok(self) -> bool:
        return all(r[2] for r in self.runs)


def sync_tenant_partitions(instance: dg.DagsterInstance, remove: bool = True) -> list[str]:
    """Apply the registry to the tenant partitions (what tenant_partitions_sensor does on the daemon);
    ``remove=False`` only adds (a dry run removes nothing)."""
    reg = load_registry()
    wanted = reg.registry.tenant_ids
    existing = set(instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    add = [t for t in wanted if t not in existing]
    if add:
        instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, add)
    # Like the sensor: a broken tenant keeps its partition; with an unreadable entry nothing is removed.
    keep = set(wanted) | set(reg.broken_tenant_ids)
    for gone in set() if reg.has_unnamed_problems or not remove else existing - keep:
        instance.delete_dynamic_partition(TENANT_PARTITIONS_NAME, gone)
    return wanted


def _partition_runs(
    pdef: dg.PartitionsDefinition | None, instance: dg.DagsterInstance
) -> list[tuple[str | None, dict[str, str]]]:
    """(partition key, extra run tags) per run: every tenant for tenant partitions; for date x tenant, one
    single-run pull per tenant of the default restatement window (the last 28 days)."""
    if pdef is None:
        return [(None, {})]
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        if isinstance(pdef, dg.MultiPartitionsDefinition):
            from kobi_cpas.defs.insights.partitions import RESTATEMENT_DAYS, range_tags

            dims = {d.name: d.partitions_def for d in pdef.partitions_defs}
            dates = list(dims["date"].get_partition_keys())[-RESTATEMENT_DAYS:]
            tenants = list(dims["tenant"].get_partition_keys())
            starts = _insights_starts()
            runs = []
            for t in tenants:  # from the tenant's insights.start_date on; none when it is after the window
                since = max([dates[0], *([starts[t]] if t in starts else [])])
                if since <= dates[-1]:
                    runs.append((None, range_tags(t, since, dates[-1])))
            return runs
        keys = list(pdef.get_partition_keys())
    if isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        return [(k, {}) for k in keys[-1:]]
    return [(k, {}) for k in keys]


def _insights_starts() -> dict[str, str]:
    """Each readable tenant's insights.start_date (YYYY-MM-DD), where it has one."""
    return {
        t.tenant_id: t.insights.start_date.isoformat()
        for t in load_registry().tenants
        if t.insights.start_date is not None
    }


# Explicit stages first (the initial full sync must precede the incremental methods, so nothing is sent twice),
# then every remaining asset in dependency order.
RUN_STAGES: list[list[str]] = [
    ["tenant_registry"],
    [
        "meta_catalogs",
        "feed_file",
        "feed_snapshot",
        "replace_feed_plan",
        "replace_feed_upload",
        "catalog_syncs",
    ],
    # The feed read again before the incremental syncs: what changed since the replace (the demo's day 2, a
    # brand's edits) goes out by the update feed and the Batch API, as the feed_source_sensor would send it.
    ["feed_file", "feed_snapshot", "update_feed_upload", "price_stock_batch", "catalog_syncs"],
]

INCREMENTAL_STAGE = next(i for i, stage in enumerate(RUN_STAGES) if "update_feed_upload" in stage)
# Last: compliance reads the materializations of the runs before it, so the demo shows each requirement met.
# Appended to the remaining assets (not a run of its own): grouping runs each after the assets it depends on,
# i.e. after every requirement's asset (pipeline_alerts, with no alert in its config, records its empty table).
FINAL_ASSETS: list[str] = ["sync_compliance", "pipeline_alerts"]


def _group(graph, keys: list[dg.AssetKey]) -> list[tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]]:
    """Split keys (in dependency order) into runs that share one partitions definition."""
    groups: list[tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]] = []
    for key in keys:
        pdef = graph.get(key).partitions_def
        deps_groups = {
            i for i, (_, gkeys) in enumerate(groups) for p in graph.get(key).parent_keys if p in gkeys
        }
        target = next(
            (i for i, (gp, _) in enumerate(groups) if gp == pdef and i >= max(deps_groups, default=-1)), None
        )
        if target is None:
            groups.append((pdef, [key]))
        else:
            groups[target][1].append(key)
    return groups


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    tenants: Sequence[str] | None = None,
    on_progress: Callable[[str], None] = print,
    raise_on_error: bool = False,
    stages: list[list[str]] | None = None,
    dry_run: bool = False,
    before_stage: Callable[[int], None] | None = None,
) -> PipelineReport:
    """``dry_run``: every run carries the run tag kobi/dry_run=true (Meta writes recorded in
    meta_dry_run_writes, not sent) and one scratch key, so each run sees the state the earlier ones would have
    left and nothing of it reaches Kobi's state. ``before_stage(i)`` is called before the first run of stage
    ``i`` (e.g. the demo changes its feeds before the incremental stage)."""
    sync_tenant_partitions(instance, remove=not dry_run)
    graph = defs.resolve_asset_graph()
    assets_defs = list(graph.assets_defs)
    order = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    done: set[dg.AssetKey] = set()

    def stage_keys(stage: list[str]) -> list[dg.AssetKey]:
        # Naming one table of a multi_asset that cannot be subset runs every table its step writes.
        named: set[dg.AssetKey] = set()
        for ad in assets_defs:
            hits = {x for x in ad.keys if x.to_user_string() in stage}
            named |= hits if ad.can_subset or not hits else set(ad.keys)
        return [k for k in order if k in named]

    plan: list[tuple[int, list[dg.AssetKey]]] = []
    chosen = RUN_STAGES if stages is None else stages
    for index, stage in enumerate(chosen):
        keys = stage_keys(stage)
        if keys:
            plan.append((index, keys))
            done.update(keys)
    if stages is None:
        final = [k for k in stage_keys(FINAL_ASSETS) if k not in done]
        rest = [k for k in order if k not in done and k not in final] + final
        if rest:
            plan.append((len(chosen), rest))

    report = PipelineReport()
    dry_tags: dict[str, str] = {}
    if dry_run:
        report.dry_run_scratch = f"cli-{uuid.uuid4().hex[:12]}"
        dry_tags = {DRY_RUN_TAG: "true", DRY_RUN_SCRATCH_TAG: report.dry_run_scratch}
    # Each failure is one line of its own below (the step and its message); the stack traces stay in the run's
    # event log (the Dagster UI) instead of filling the terminal.
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    # Every run of the plan first, so each progress line can say "run 3/15".
    todo = []
    for stage_index, keys in plan:
        for pdef, gkeys in _group(graph, keys):
            for pkey, extra_tags in _partition_runs(pdef, instance):
                where = pkey or extra_tags.get("dagster/asset_partition_range_start", "")
                if tenants and where and not any(t in where.split("|") for t in tenants):
                    continue
                todo.append((stage_index, gkeys, pkey, extra_tags))
    started_stages: set[int] = set()
    for i, (stage_index, gkeys, pkey, extra_tags) in enumerate(todo, start=1):
        if before_stage is not None and stage_index not in started_stages:
            before_stage(stage_index)
        started_stages.add(stage_index)
        label = ", ".join(k.to_user_string() for k in gkeys)
        started = time.monotonic()
        span = (
            (
                f" {extra_tags['dagster/asset_partition_range_start']} .. "
                f"{extra_tags['dagster/asset_partition_range_end']}"
            )
            if extra_tags
            else ""
        )
        what = f"[{label}]" + (f" partition {pkey}" if pkey else "") + span
        on_progress(f"run {i}/{len(todo)} {what}")
        result = dg.materialize(
            assets_defs,
            instance=instance,
            partition_key=pkey,
            selection=dg.AssetSelection.assets(*gkeys),
            raise_on_error=raise_on_error,
            # The owner tags let a later `make run` tell this live run from an orphaned one.
            tags={"kobi/launched_by": "make-run", **owner_tags(), **extra_tags, **dry_tags},
            run_config=quiet,
        )
        secs = time.monotonic() - started
        report.runs.append((label, pkey or span.strip() or None, result.success, secs))
        report.run_ids.append(result.run_id)
        if result.success:
            on_progress(f"  ok in {secs:.1f}s")
        else:
            why = failure_reason(result)
            report.failures.append((label, pkey or span.strip() or None, why))
            on_progress(f"  FAILED in {secs:.1f}s (run {result.run_id}): {why}")
    return report


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's message, without its stack trace (the Dagster UI keeps the whole of it)."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            failure = data.user_failure_data
            if failure is not None and failure.description:
                return f"{event.step_key}: {failure.description}"
            if data.error is not None:
                cause = data.error.cause or data.error
                return f"{event.step_key}: {cause.message.strip().splitlines()[-1] if cause.message else cause.cls_name}"
    return "the run failed before a step ran"
