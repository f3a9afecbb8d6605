"""Helpers shared by the domain definitions: table metadata from the warehouse specs, Markdown previews."""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import duckdb

from kobi_cpas.defs.tenants.evaluation import log_tenant_problems, registry_notes
from kobi_cpas.registry import RegistryError, load_registry
from kobi_cpas.warehouse.specs import TableSpec, ViewSpec

OWNERS_DATA = ["team:kobi-data"]
DUCKDB_POOL = "duckdb_write"


def table_definition_metadata(*specs: TableSpec | ViewSpec) -> dict[str, Any]:
    """Definition metadata for an asset that owns one or more analyst tables (the first is the main one)."""
    main = specs[0]
    meta: dict[str, Any] = {
        "dagster/table_name": f"kobi_cpas.main.{main.name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c.name, c.type, description=c.comment) for c in main.columns]
        ),
    }
    if len(specs) > 1:
        meta["kobi/tables"] = ", ".join(s.name for s in specs)
    return meta


def md_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], max_rows: int = 10) -> str:
    """A small Markdown table; cells are escaped and shortened so previews stay readable."""

    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= 80 else s[:77] + "..."

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in list(rows)[:max_rows]:
        out.append("| " + " | ".join(cell(v) for v in r) + " |")
    if len(rows) > max_rows:
        out.append(f"\n_{len(rows) - max_rows} more rows_")
    return "\n".join(out)


def preview(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = (), max_rows: int = 10
) -> dg.MetadataValue:
    cur = con.execute(sql, list(params))
    headers = [d[0] for d in cur.description]
    rows = cur.fetchmany(max_rows + 1)
    return dg.MetadataValue.md(md_table(rows, headers, max_rows=max_rows) if rows else "_no rows_")


def count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    row = con.execute(sql, list(params)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def every_tenant(context: dg.ScheduleEvaluationContext, run_key_prefix: str, period_format: str):
    """One run per tenant partition per period (e.g. day or hour), idempotent through the run key.

    Tenants whose registry entry is broken keep their partition but get no run (it could only fail); they are
    named in the skip reason or the tick log. An unreadable registry file skips the tick."""
    try:
        reg = load_registry()
    except RegistryError as exc:
        return dg.SkipReason(f"registry invalid, no {run_key_prefix} run launched: {exc}")
    broken = set(reg.broken_tenant_ids)
    notes = registry_notes(reg)
    log_tenant_problems(context.log, f"{run_key_prefix} schedule", notes)
    partitions = set(context.instance.get_dynamic_partitions("tenant"))
    tenants = sorted(partitions - broken)
    if not tenants:
        why = (
            "every tenant partition belongs to a broken registry entry"
            if partitions
            else "no tenant partitions yet (tenant_partitions_sensor adds them from the registry)"
        )
        return dg.SkipReason("; ".join([why, *notes]))
    period = context.scheduled_execution_time.strftime(period_format)
    return [dg.RunRequest(run_key=f"{run_key_prefix}:{t}:{period}", partition_key=t) for t in tenants]
