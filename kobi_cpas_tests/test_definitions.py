"""The code location loads with placeholder env (no secrets needed) and follows the house rules: every asset
is a documented noun with a group, owners, kinds and, when it owns an analyst table, its table metadata."""

from __future__ import annotations

import dagster as dg

import kobi_cpas.warehouse.all_tables  # noqa: F401  (every domain's tables)
from kobi_cpas.warehouse.tables import TABLES

EXPECTED_ASSETS = {
    "tenant_registry",
    "meta_catalogs",
    "feed_snapshot",
    "replace_feed_plan",
    "replace_feed_upload",
    "update_feed_upload",
    "price_stock_batch",
    "catalog_syncs",
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
    assert {"meta", "warehouse", "registry", "catalog_sync"} <= set(d.resources)
    names = {s.name for s in d.schedules} | {s.name for s in d.sensors}
    assert {
        "tenant_partitions_sensor",
        "catalog_replace_schedule",
        "catalog_update_schedule",
        "catalog_batch_schedule",
        "feed_source_sensor",
        "sync_status_sensor",
    } <= names


def test_every_asset_follows_house_rules(monkeypatch, tmp_path):
    d = _defs(monkeypatch, tmp_path)
    graph = d.resolve_asset_graph()
    owned_tables = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, f"{name} needs a docstring"
        assert node.group_name and node.group_name != "default", name
        assert node.owners, name
        assert node.kinds, name
        meta = node.metadata
        if "dagster/table_name" in meta:
            owned_tables.add(meta["dagster/table_name"].split(".")[-1])
            assert "dagster/column_schema" in meta, name
        for extra in str(meta.get("kobi/tables", "")).split(", "):
            if extra:
                owned_tables.add(extra)
        if any(p in (node.pools or set()) for p in ("duckdb_write",)):
            continue
        assert "duckdb" not in node.kinds, f"{name} writes DuckDB but is not in the duckdb_write pool"
    assert set(TABLES) <= owned_tables, (
        f"analyst tables without an owning asset: {set(TABLES) - owned_tables}"
    )


def test_no_secret_in_resource_config(monkeypatch, tmp_path):
    monkeypatch.setenv("META_ACCESS_TOKEN", "EAAsecret-should-not-be-in-config")
    d = _defs(monkeypatch, tmp_path)
    meta = d.resources["meta"]
    # the resource holds an EnvVar reference, never the value
    assert "EAAsecret" not in repr(meta.access_token) and "META_ACCESS_TOKEN" in repr(meta.access_token)
