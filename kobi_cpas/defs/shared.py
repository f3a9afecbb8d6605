"""Helpers shared by the domain definitions: table metadata from the warehouse specs, Markdown previews."""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import duckdb

from kobi_cpas.warehouse.specs import TableSpec, ViewSpec

OWNERS_DATA = ["team:kobi-data"]
# Run statuses of a run that is queued or running.
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Definition metadata of a step that owns no table: the analyst tables (owned by other, downstream assets) it
# writes rows of, comma-separated, or "none".
WRITES_ROWS_OF = "kobi/writes_rows_of"
# Definition metadata of a DuckDB-writing step that also waits on Meta for minutes: how it keeps the writers'
# lock out of those waits (short transactions between them).
SHORT_WRITES = "kobi/short_writes"


def md_escape(text: str) -> str:
    """Plain text (a column comment, a value, a call to action) made safe inside Markdown the UI renders:
    ``<amount>`` is not swallowed as an HTML tag and ``*`` or a leading ``_`` start no emphasis."""
    out = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("*", "\\*").replace("`", "\\`")
    # '_' emphasises only at a word's edge (CommonMark): act_<digits> and tenant_id stay as they are
    return "".join(
        "\\_"
        if ch == "_" and (i == 0 or not out[i - 1].isalnum() or i + 1 == len(out) or not out[i + 1].isalnum())
        else ch
        for i, ch in enumerate(out)
    )


def column_schema(spec: TableSpec | ViewSpec) -> dg.TableSchema:
    # The UI renders column descriptions as Markdown; the comments stay plain text in DuckDB.
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.type, description=md_escape(c.comment) if c.comment else c.comment)
            for c in spec.columns
        ]
    )


def table_definition_metadata(spec: TableSpec | ViewSpec) -> dict[str, Any]:
    """Definition metadata of the asset that owns one analyst table or view (exactly one asset per table)."""
    meta: dict[str, Any] = {
        "dagster/table_name": f"kobi_cpas.main.{spec.name}",
        "dagster/column_schema": column_schema(spec),
    }
    if isinstance(spec, ViewSpec):
        meta["kobi/kind"] = "view"
    return meta


def column_lineage(deps: dict[str, list[tuple[str, str]]]) -> dg.TableColumnLineage:
    """``{column: [(upstream asset key, upstream column), ...]}`` as Dagster column lineage."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=dg.AssetKey(key), column_name=name) for key, name in sources]
            for column, sources in deps.items()
        }
    )


def table_spec(
    key: str,
    table: TableSpec | ViewSpec,
    *,
    description: str,
    lineage: dict[str, list[tuple[str, str]]] | None = None,
    **kwargs: Any,
) -> dg.AssetSpec:
    """One AssetSpec of a multi_asset per analyst table: its table name, column schema and column lineage."""
    meta = table_definition_metadata(table)
    if lineage:
        meta["dagster/column_lineage"] = column_lineage(lineage)
    return dg.AssetSpec(key, description=description, metadata=meta, **kwargs)


def specs_by_key(*specs: dg.AssetSpec) -> dict[str, dg.AssetSpec]:
    """Table specs by asset key. Kept in a dict: load_defs would load a module-level AssetSpec (or a list of
    them) as an external asset besides the multi_asset that materializes it."""
    return {s.key.to_user_string(): s for s in specs}


def table_result(
    spec: dg.AssetSpec,
    con: duckdb.DuckDBPyConnection,
    where: str = "true",
    params: Sequence[Any] = (),
    preview_sql: str | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    check_results: Sequence[dg.AssetCheckResult] = (),
    relation: str | None = None,
) -> dg.MaterializeResult:
    """The MaterializeResult of one table spec: the table's own column schema and lineage, its row count where
    ``where`` holds (the partition's rows) and a preview (``preview_sql`` takes the same ``params``).
    ``relation``: what to count instead of the table, e.g. a view's SQL in parentheses."""
    relation = relation or "main." + str(spec.metadata["dagster/table_name"]).split(".")[-1]
    meta: dict[str, Any] = {
        "dagster/column_schema": spec.metadata["dagster/column_schema"],
        "dagster/row_count": count(con, f"SELECT count(*) FROM {relation} WHERE {where}", params),
    }
    if "dagster/column_lineage" in spec.metadata:
        meta["dagster/column_lineage"] = spec.metadata["dagster/column_lineage"]
    if preview_sql:
        meta["preview"] = preview(con, preview_sql, params)
    meta.update(metadata or {})
    return dg.MaterializeResult(asset_key=spec.key, metadata=meta, check_results=list(check_results))


def md_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], max_rows: int = 10) -> str:
    """A small Markdown table; cells are escaped and shortened so previews stay readable."""

    def cell(v: Any) -> str:
        s = "" if v is None else str(v).replace("\n", " ")
        s = s if len(s) <= 80 else s[:77] + "..."
        return md_escape(s).replace("|", "\\|")

    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
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
