"""The code location loads with placeholder env (no secrets needed) and follows the house rules: every asset
is a documented noun with a group, owners, kinds and, when it owns an analyst table, its table metadata."""

from __future__ import annotations

import dagster as dg
import duckdb

from kobi_cpas.defs.shared import SHORT_WRITES, WRITES_ROWS_OF, table_result, table_spec
from kobi_cpas.tables import SCHEMA

TABLES = SCHEMA.tables

EXPECTED_ASSETS = {
    "tenant_registry",
    "meta_catalogs",
    "feed_snapshot",
    "replace_feed_plan",
    "replace_feed_upload",
    "update_feed_upload",
    "price_stock_batch",
    "catalog_syncs",
    "feed_items",
    "feed_item_issues",
    "catalog_item_state",
    "sync_compliance",
    "pipeline_alerts",
}


def _defs(monkeypatch, tmp_path) -> dg.Definitions:
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("KOBI_CPAS_DUCKDB_PATH", str(tmp_path / "k.duckdb"))
    from kobi_cpas.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    return d


def test_loads_without_secrets_and_has_expected_graph(monkeypatch, tmp_path):
    d = _defs(monkeypatch, tmp_path)
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS
    assert {"meta", "warehouse", "registry", "catalog_sync", "alert_webhook"} <= set(d.resources)
    names = {s.name for s in d.schedules} | {s.name for s in d.sensors}
    assert {
        "tenant_partitions_sensor",
        "catalog_replace_schedule",
        "catalog_update_schedule",
        "catalog_batch_schedule",
        "feed_source_sensor",
        "sync_status_sensor",
        "sync_compliance_schedule",
        "run_failure_alert_sensor",
        "pipeline_alerts_sensor",
    } <= names


def test_the_tests_load_the_location_once_and_give_it_each_environments_resources(monkeypatch, tmp_path):
    """Tests run jobs on the location loaded once per process, with the resources of the test's environment
    (kobi_cpas_tests.dagster_fixtures): the same definitions as loading the location under that environment."""
    from kobi_cpas_tests.dagster_fixtures import location_definitions, with_location_resources

    def graph(d: dg.Definitions) -> tuple[object, ...]:
        return (
            d.resolve_asset_graph().get_all_asset_keys(),
            {j.name for j in d.resolve_all_job_defs()},
            {s.name for s in d.schedules},
            {s.name for s in d.sensors},
        )

    location_definitions()  # loaded under whatever environment came first in this process
    for i in (1, 2):
        monkeypatch.setenv("KOBI_CPAS_POLL_SECONDS", str(i))
        loaded = _defs(monkeypatch, tmp_path / str(i))
        given = with_location_resources(location_definitions())
        assert graph(given) == graph(loaded)
        assert dict(given.resources) == dict(loaded.resources)
        assert given.resources["warehouse"].duckdb_path.startswith(str(tmp_path / str(i)))


def _table_of(node) -> str | None:
    name = node.metadata.get("dagster/table_name")
    return str(getattr(name, "value", name)).split(".")[-1] if name is not None else None


def _schema_columns(node) -> list[tuple[str, str]]:
    schema = node.metadata["dagster/column_schema"]
    return [(c.name, c.type) for c in getattr(schema, "schema", schema).columns]


def test_every_asset_follows_house_rules(monkeypatch, tmp_path):
    d = _defs(monkeypatch, tmp_path)
    graph = d.resolve_asset_graph()
    owners: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, f"{name} needs a docstring"
        assert node.group_name and node.group_name != "default", name
        assert node.owners, name
        assert node.kinds, name
        meta = node.metadata
        assert "kobi/tables" not in meta, f"{name} claims several tables: one asset (spec) per table"
        table = _table_of(node)
        if table is not None:
            owners.setdefault(table, []).append(name)
        if not node.is_materializable:
            continue
        # No pools: a step waiting for a pool slot makes the in-process executor spin on a core; DuckDB writers
        # take turns on the warehouse's writers' lock, asleep. A writer that waits on Meta for minutes says how it
        # keeps the lock out of those waits.
        assert not node.pools, f"{name} declares pools {node.pools}: the in-process executor spins on them"
        if SHORT_WRITES in meta:
            assert {"meta", "duckdb"} <= set(node.kinds), name
        if "duckdb" in node.kinds and table is None:
            assert WRITES_ROWS_OF in meta, f"{name} writes DuckDB: own a table or declare {WRITES_ROWS_OF}"
    declared = {**TABLES, **SCHEMA.views}
    assert set(owners) <= set(declared), f"assets naming unknown tables: {set(owners) - set(declared)}"
    assert set(declared) <= set(owners), (
        f"analyst tables without an owning asset: {set(declared) - set(owners)}"
    )
    shared = {t: keys for t, keys in owners.items() if len(keys) > 1}
    assert not shared, f"analyst tables owned by more than one asset: {shared}"
    for table, (name,) in owners.items():
        expected = [(c.name, c.type) for c in declared[table].columns]
        assert _schema_columns(graph.get(dg.AssetKey(name))) == expected, f"{name}: column schema of {table}"


def test_steps_without_a_table_write_only_tables_owned_downstream(monkeypatch, tmp_path):
    """A step that writes rows of another asset's table (the uploads append to catalog_syncs) names it, and that
    table's asset is downstream of it, so the lineage shows who writes what."""
    graph = _defs(monkeypatch, tmp_path).resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    owner = {_table_of(graph.get(k)): k for k in keys if _table_of(graph.get(k))}
    writers = {
        k: str(getattr(v, "value", v))
        for k in keys
        if (v := graph.get(k).metadata.get(WRITES_ROWS_OF)) is not None
    }
    assert {"replace_feed_upload", "update_feed_upload", "price_stock_batch"} <= {
        k.to_user_string() for k, v in writers.items() if "catalog_syncs" in v.split(", ")
    }
    for key, value in writers.items():
        if value == "none":
            continue
        downstream: set[dg.AssetKey] = set()
        todo = [key]
        while todo:
            for child in graph.get(todo.pop()).child_keys:
                if child not in downstream:
                    downstream.add(child)
                    todo.append(child)
        for table in value.split(", "):
            assert table in owner, f"{key.to_user_string()} writes {table}, which no asset owns"
            assert owner[table] in downstream, f"{table}'s asset is not downstream of {key.to_user_string()}"


def test_column_lineage_points_at_upstream_columns(monkeypatch, tmp_path):
    graph = _defs(monkeypatch, tmp_path).resolve_asset_graph()
    with_lineage = 0
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        lineage = node.metadata.get("dagster/column_lineage")
        if lineage is None:
            continue
        with_lineage += 1
        lineage = getattr(lineage, "column_lineage", lineage)
        own = {c for c, _ in _schema_columns(node)}
        for column, deps in lineage.deps_by_column.items():
            assert column in own, f"{key.to_user_string()}.{column} is not a column of its table"
            for dep in deps:
                assert dep.asset_key in node.parent_keys, f"{key.to_user_string()}: {dep.asset_key} not a dep"
                upstream = {c for c, _ in _schema_columns(graph.get(dep.asset_key))}
                assert dep.column_name in upstream, (
                    f"{dep.asset_key.to_user_string()} has no {dep.column_name}"
                )
    # feed -> item state, problems -> summary and health, feed/lookups -> product metrics, match rates, dashboard
    assert with_lineage >= 7


def test_table_result_carries_the_tables_own_schema_and_partition_rows():
    spec = table_spec(
        "feed_item_issues", TABLES["feed_item_issues"], description="x", lineage={"retailer_id": [("a", "b")]}
    )
    con = duckdb.connect()
    con.execute(TABLES["feed_item_issues"].ddl("main.feed_item_issues"))
    con.execute(
        "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, code) "
        "VALUES ('t1', 's', 'r1', 'c'), ('t1', 's', 'r2', 'c'), ('t2', 's', 'r1', 'c')"
    )
    res = table_result(
        spec,
        con,
        "tenant_id = ?",
        ["t1"],
        "SELECT retailer_id FROM main.feed_item_issues WHERE tenant_id = ?",
    )
    assert res.asset_key == dg.AssetKey("feed_item_issues")
    assert res.metadata["dagster/row_count"] == 2
    columns = [c.name for c in res.metadata["dagster/column_schema"].columns]
    assert columns == TABLES["feed_item_issues"].column_names
    assert "dagster/column_lineage" in res.metadata
    assert "| r1 |" in res.metadata["preview"].value and "| r2 |" in res.metadata["preview"].value


def test_no_secret_in_resource_config(monkeypatch, tmp_path):
    monkeypatch.setenv("META_ACCESS_TOKEN", "EAAsecret-should-not-be-in-config")
    d = _defs(monkeypatch, tmp_path)
    meta = d.resources["meta"]
    # the resource holds an EnvVar reference, never the value
    assert "EAAsecret" not in repr(meta.access_token) and "META_ACCESS_TOKEN" in repr(meta.access_token)


def test_markdown_the_ui_renders_keeps_angle_brackets_and_asterisks():
    """Column descriptions and preview cells are Markdown in the UI: '<amount>' must not be taken for an HTML
    tag, '*' for emphasis; the DuckDB comments stay plain text."""
    from kobi_cpas.defs.shared import column_schema, md_escape, md_table
    from kobi_cpas.tables import SCHEMA

    assert md_escape("Price as '<amount> <ISO 4217>'") == "Price as '&lt;amount&gt; &lt;ISO 4217&gt;'"
    assert md_escape("converted_product_* and *bold*") == "converted_product\\_\\* and \\*bold\\*"
    assert md_escape("tenant_id, act_123") == "tenant_id, act_123"  # inside a word '_' emphasises nothing
    assert md_escape("_x_ a & b") == "\\_x\\_ a &amp; b"
    feed_items = SCHEMA.tables["feed_items"]
    price = next(c for c in column_schema(feed_items).columns if c.name == "price")
    assert "&lt;amount&gt;" in price.description
    assert "<amount>" in next(c.comment for c in feed_items.columns if c.name == "price")
    table = md_table([('is not in the format "<amount> <currency>"', "a|b")], ["hint", "x"])
    assert "&lt;amount&gt; &lt;currency&gt;" in table and "a\\|b" in table
