"""Publishing the analyst file on a cadence, for fleets (``publish_interval_seconds`` > 0 on the warehouse
resource): runs that wrote mark it due, and this sensor publishes it at most once per interval. With the default
(0) every run publishes at its end and the sensor only says so."""

import time

import dagster as dg

from kobi_cpas.defs.shared import ACTIVE
from kobi_cpas.resources import WarehouseResource


@dg.op(tags={"kobi/kind": "publish"})
def publish_analyst_file(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> dg.Output[None]:
    """Build a new analyst file from the work database (incremental: only the tables that changed are
    rewritten) and swap it in atomically; open analyst sessions keep the previous file until they reconnect."""
    result = warehouse.publish_now()
    context.log.info(
        f"published {result.path} in {result.seconds:.2f} s "
        f"({'incremental' if result.incremental else 'full'}: {len(result.rewritten)} tables rewritten)"
    )
    return dg.Output(
        None,
        metadata={
            "analyst_file": dg.MetadataValue.path(str(result.path)),
            "seconds": round(result.seconds, 3),
            "incremental": result.incremental,
            "tables_rewritten": len(result.rewritten),
            "rewritten": ", ".join(result.rewritten) or "none",
            # Tables of which only the changed rows were replaced: rows deleted and inserted.
            "rows_replaced": ", ".join(f"{n} -{g:,}/+{c:,}" for n, (g, c) in result.by_rows.items())
            or "none",
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Publish the analyst DuckDB file from the work database (what runs do at their end when "
    "publish_interval_seconds is 0).",
)
def analyst_publish_job() -> None:
    publish_analyst_file()


@dg.sensor(
    job=analyst_publish_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes the analyst file when runs wrote since the last publish and the publish interval "
    "has passed (publish_interval_seconds on the warehouse resource); reads only two small files beside the "
    "work database.",
)
def analyst_publish_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.RunRequest | dg.SkipReason:
    if warehouse.publish_interval_seconds <= 0:
        return dg.SkipReason(
            "every run publishes the analyst file at its end (publish_interval_seconds is 0; set "
            "KOBI_CPAS_PUBLISH_INTERVAL_SECONDS for a fleet)"
        )
    interval = warehouse.publish_interval_seconds
    last = context.instance.get_run_records(dg.RunsFilter(job_name=analyst_publish_job.name), limit=1)
    if last:
        run, ended = last[0].dagster_run, last[0].end_time
        if run.status in ACTIVE:
            return dg.SkipReason(f"publish run {run.run_id[:8]} ({run.status.value}) still in progress")
        if run.status == dg.DagsterRunStatus.FAILURE and ended and time.time() - ended < interval:
            # Retried once per interval, not on every evaluation (a full disk would otherwise fail every 30 s).
            return dg.SkipReason(
                f"the last publish run {run.run_id[:8]} failed; the next attempt comes {interval:.0f} s after it"
            )
    reason = warehouse.publish_wait_reason()
    return dg.SkipReason(reason) if reason else dg.RunRequest()
