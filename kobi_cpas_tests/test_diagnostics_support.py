"""Helpers shared by the test_diagnostics_* modules (catalog content in the sandbox, catalog_syncs rows, table
reads), plus tests of the helpers' own assumptions about the sandbox."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import requests

from kobi_cpas.meta import MetaGraphClient
from kobi_cpas_tests.test_sandbox_catalog_feeds import CATALOG, create_feed, item, to_csv, upload
from meta_sandbox import load_fixture

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

TENANT = "anatolia_home"
NO_PIXEL_CATALOG = "2000000000000003"
REFERENCE_ERROR = load_fixture("catalog_all_errors")["all"][0]


def item_errors_admin(
    sandbox: SandboxHandle, method: str, retailer_id: str, error_type: str | None, catalog: str = CATALOG
) -> dict[str, Any]:
    body: dict[str, Any] = {"catalog_id": catalog, "retailer_id": retailer_id}
    if error_type is not None:
        body["error_type"] = error_type
    resp = requests.request(method, f"{sandbox.url}/__sandbox/item_errors", json=body, timeout=5)
    resp.raise_for_status()
    return resp.json()


def seed_items(client: MetaGraphClient, n: int, catalog: str = CATALOG, prefix: str = "sku") -> list[str]:
    """n valid items in the catalog through a feed upload."""
    rids = [f"{prefix}-{i:04d}" for i in range(n)]
    upload(client, create_feed(client, catalog), to_csv([item(r) for r in rids]))
    return rids


def product_ids(client: MetaGraphClient, catalog: str = CATALOG) -> dict[str, str]:
    return {
        p["retailer_id"]: p["id"]
        for p in client.paginate(f"{catalog}/products", params={"fields": "id,retailer_id", "limit": 500})
    }


def add_sync(
    con: duckdb.DuckDBPyConnection,
    sync_id: str,
    method: str,
    started_at: datetime,
    *,
    upload_session_id: str | None = None,
    handle: str | None = None,
    errors: int | None = 0,
    warnings: int | None = 0,
    shard: int = 0,
    status: str = "finished",
    tenant_id: str = TENANT,
    catalog_id: str = CATALOG,
) -> None:
    """A catalog_syncs row as kobi_cpas.sync.methods writes it."""
    con.execute(
        """INSERT INTO main.catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, started_at, finished_at,
             items_sent, status, upload_session_id, handle, errors_count, warnings_count)
           VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)""",
        [
            sync_id,
            tenant_id,
            catalog_id,
            method,
            -1 if method == "batch" else shard,
            started_at,
            started_at if status == "finished" else None,
            status,
            upload_session_id,
            handle,
            errors,
            warnings,
        ],
    )


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def diagnostics(
    con: duckdb.DuckDBPyConnection, where: str = "true", params: list[Any] | None = None
) -> list[dict]:
    return rows(
        con,
        f"SELECT * FROM main.catalog_diagnostics WHERE {where} ORDER BY source, retailer_id, error_type, field",
        params,
    )


def test_reference_error_fixture_is_the_catalog_integration_sample() -> None:
    assert REFERENCE_ERROR["error_type"] == "IMAGE_RESOLUTION_LOW"
    assert REFERENCE_ERROR["error_priority"] == "HIGH" and REFERENCE_ERROR["call_to_action"]
