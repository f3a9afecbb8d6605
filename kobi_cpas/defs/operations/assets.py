"""The operations tables: cadence compliance with Meta's quality bar, and the alerts raised for a person."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from kobi_cpas.defs.operations.common import GROUP, failed_runs, last_successes
from kobi_cpas.defs.shared import OWNERS_DATA, specs_by_key, table_result, table_spec
from kobi_cpas.operations.alerts import COLUMNS, upsert_alerts
from kobi_cpas.operations.compliance import REQUIREMENTS, build_compliance
from kobi_cpas.operations.report import read_report_data, write_report
from kobi_cpas.operations.tables import PIPELINE_ALERTS, SYNC_COMPLIANCE
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource

_OPS = dict(group_name=GROUP, owners=OWNERS_DATA)
_TIMESTAMPS = ("created_at", "last_attempt_at", "delivered_at", "resolved_at")

OPS = specs_by_key(
    table_spec(
        "sync_compliance",
        SYNC_COMPLIANCE,
        description="Per tenant and Meta requirement (full replace every 24 h, update hourly, price and stock "
        "every 15 min, diagnostics hourly, insights daily): the last success of the asset that meets it, its "
        "age, ok / breached / never, and what is in flight or why it is late.",
        deps=[*(r.asset_key for r in REQUIREMENTS), "catalog_syncs"],
        kinds={"dagster", "duckdb"},
        **_OPS,
    ),
    table_spec(
        "pipeline_alerts",
        PIPELINE_ALERTS,
        description="One row per alert for a person (a failed run, or one breach episode of sync_compliance) "
        "with its webhook delivery. Written by the runs that run_failure_alert_sensor and "
        "pipeline_alerts_sensor request, with the rows in the run config; merged by alert_id, never duplicated.",
        deps=["sync_compliance"],
        kinds={"duckdb"},
        **_OPS,
    ),
)


@dg.multi_asset(specs=[OPS["sync_compliance"]])
def sync_compliance(
    context: dg.AssetExecutionContext, registry: TenantRegistryResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Rebuild sync_compliance for every valid tenant from Dagster's materialization and run records."""
    tenants = [t.tenant_id for t in registry.load().tenants]
    now = datetime.now(UTC)
    # Read from Dagster before the work database is opened (no connection held across the queries).
    successes = last_successes(context.instance, tenants, now)
    failures = failed_runs(context.instance, tenants, now)
    with warehouse.connection() as con:
        build_compliance(con, tenants, successes, failures, now)
        breached = con.execute("SELECT count(*) FROM main.sync_compliance WHERE status <> 'ok'").fetchone()
        warehouse.publish(con)
        return table_result(
            OPS["sync_compliance"],
            con,
            preview_sql="SELECT tenant_id, requirement, status, last_success_at, round(age_seconds / 60) AS "
            "age_minutes, pending FROM main.sync_compliance ORDER BY status = 'ok', tenant_id, requirement "
            "LIMIT 11",
            metadata={"not_ok": int(breached[0]) if breached else 0, "tenants": len(tenants)},
        )


class AlertRowConfig(dg.Config):
    """One pipeline_alerts row (timestamps as ISO 8601 strings)."""

    alert_id: str
    kind: str
    message: str
    created_at: str
    delivery_status: str
    delivery_attempts: int = 0
    tenant_id: str | None = None
    job_name: str | None = None
    requirement: str | None = None
    run_id: str | None = None
    last_attempt_at: str | None = None
    delivered_at: str | None = None
    delivery_error: str | None = None
    resolved_at: str | None = None


class PipelineAlertsConfig(dg.Config):
    alerts: list[AlertRowConfig] = []


def alerts_run_config(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run config of pipeline_alerts_job carrying ``rows`` (pipeline_alerts rows)."""
    alerts = [
        {c: (v.isoformat() if isinstance(v, datetime) else v) for c in COLUMNS if (v := r.get(c)) is not None}
        for r in rows
    ]
    return {"ops": {"pipeline_alerts": {"config": {"alerts": alerts}}}}


def _row(alert: AlertRowConfig) -> dict[str, Any]:
    row = alert.model_dump()
    for c in _TIMESTAMPS:
        if row.get(c):
            row[c] = datetime.fromisoformat(row[c])
    return row


@dg.multi_asset(specs=[OPS["pipeline_alerts"]])
def pipeline_alerts(
    context: dg.AssetExecutionContext, config: PipelineAlertsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Merge the alert rows of the run config into pipeline_alerts (by alert_id) and publish."""
    rows = [_row(a) for a in config.alerts]
    with warehouse.connection() as con:
        upsert_alerts(con, rows)
        warehouse.publish(con)
        return table_result(
            OPS["pipeline_alerts"],
            con,
            preview_sql="SELECT created_at, kind, tenant_id, coalesce(requirement, job_name) AS subject, "
            "delivery_status, message FROM main.pipeline_alerts ORDER BY created_at DESC LIMIT 11",
            metadata={"alerts_merged": len(rows)},
        )


REPORT_FILE = "kobi_cpas_report.html"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"plotly", "html"},
    deps=["catalog_health", "catalog_diagnostics_summary", "sync_compliance", "shared_item_metrics"],
)
def analyst_report(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A static HTML page next to the analyst file, per tenant: catalog health over time, the top problems with
    their calls to action, sync compliance with Meta's cadences and ROAS by retailer over time, as charts that
    open offline in any browser (Plotly, its JavaScript inlined)."""
    with warehouse.connection() as con:
        data = read_report_data(con)  # read, then the database is let go before drawing
    path = warehouse.get_warehouse().analyst_path.with_name(REPORT_FILE)
    charts = write_report(data, path, datetime.now(UTC))
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(path.resolve())),
            "open": dg.MetadataValue.url(path.resolve().as_uri()),
            "tenants": len(data),
            "charts": len(charts),
        }
    )
