"""Meta product feeds: the feed Kobi owns per tenant and shard (``sync_state.feeds``), the upload files and
the upload sessions.

A replace upload deletes every item *of its feed* that the file does not contain, so a feed must never be
shared: two tenants writing to one feed delete each other's items with every replace. A feed is therefore
used only when Kobi's state records it for this tenant (it was created by Kobi for this tenant, or a person
adopted it with the run tag ``kobi/adopt_feed=<feed_id>``). A feed found only by its name is never adopted
silently; creating a new feed when none with the name exists stays automatic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from kobi_cpas.diagnostics.collect import record_upload_rows
from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.meta.errors import UNKNOWN_OBJECT_SUBCODE, MetaInvalidRequestError
from kobi_cpas.sync.guards import SyncBlocked
from kobi_cpas.warehouse import sql_str

if TYPE_CHECKING:  # annotations only: sync.context imports this module
    from kobi_cpas.sync.context import SyncContext

FEED_NAME = "Kobi primary feed"
ADOPT_FEED_TAG = "kobi/adopt_feed"  # value: a feed id, or several separated by commas (one per shard)


def feed_name(shards: int, shard: int) -> str:
    return FEED_NAME if shards <= 1 else f"{FEED_NAME} (shard {shard + 1} of {shards})"


def parse_adopt_tag(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split(",") if v.strip())


def _owner_elsewhere(ctx: SyncContext, feed_id: str) -> str | None:
    with ctx.db() as con:
        row = con.execute(
            "SELECT min(tenant_id) FROM sync_state.feeds WHERE feed_id = ? AND tenant_id <> ?",
            [feed_id, ctx.tenant_id],
        ).fetchone()
    return row[0] if row else None


def recorded_feeds(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[int, str]:
    """Shard -> the feed id Kobi's state records for the tenant."""
    out: dict[int, str] = {}
    for shard, feed_id in con.execute(
        "SELECT shard, feed_id FROM sync_state.feeds WHERE tenant_id = ?", [tenant_id]
    ).fetchall():
        out.setdefault(int(shard), feed_id)
    return out


def ensure_feed(ctx: SyncContext, shard: int, recorded: dict[int, str] | None = None) -> str:
    """The Meta product feed Kobi owns for this tenant and shard: the recorded one, else a new one.

    The recorded id is checked first (one GET): a feed deleted in Commerce Manager, or a catalog rebuilt,
    would otherwise fail every upload until someone cleared the record by hand. A feed with Kobi's name that
    the state does not record blocks the sync (``SyncBlocked``) unless the run adopts it by tag.
    ``recorded``: :func:`recorded_feeds` as the caller just read them (read here when None; this only ever
    changes the row of its own shard).
    """
    name = feed_name(ctx.shards, shard)
    if recorded is None:
        with ctx.db() as con:
            recorded = recorded_feeds(con, ctx.tenant_id)
    known = recorded.get(shard)
    if known is not None:
        try:
            ctx.client.get(str(known), params={"fields": "id"})
            return known
        except MetaInvalidRequestError as exc:
            if exc.error_subcode != UNKNOWN_OBJECT_SUBCODE:
                raise
            ctx.progress(
                f"Meta product feed {known} no longer exists; looking for '{name}' in catalog {ctx.catalog_id}"
            )
            with ctx.db() as con:
                con.execute(
                    "DELETE FROM sync_state.feeds WHERE tenant_id = ? AND shard = ?", [ctx.tenant_id, shard]
                )
    feed_id = None
    for feed in ctx.client.paginate(f"{ctx.catalog_id}/product_feeds", params={"fields": "id,name"}):
        if feed.get("name") == name:
            feed_id = str(feed["id"])
            break
    if feed_id is not None:
        owner = _owner_elsewhere(ctx, feed_id)
        where = f"tenant '{ctx.tenant_id}' catalog {ctx.catalog_id} shard {shard}"
        if owner is not None:
            raise SyncBlocked(
                f"{where}: Meta product feed {feed_id} '{name}' is tenant '{owner}''s feed in Kobi's state; "
                f"two tenants sharing one feed delete each other's items with every replace upload. Give "
                f"tenant '{ctx.tenant_id}' its own catalog in the tenant registry."
            )
        if feed_id not in ctx.adopt_feed_ids:
            raise SyncBlocked(
                f"{where}: found Meta product feed {feed_id} '{name}' by its name, but Kobi's state does not "
                "record it for this tenant (another tenant, another Kobi installation or a person may be "
                "uploading to it, and a replace upload would delete their items). Nothing was sent. If this "
                f"feed is this tenant's (e.g. Kobi's work database was lost), re-run with the run tag "
                f"{ADOPT_FEED_TAG}={feed_id}; otherwise give the tenant its own catalog."
            )
        ctx.progress(f"adopted Meta product feed {feed_id} '{name}' in catalog {ctx.catalog_id} (run tag)")
    else:
        feed_id = str(ctx.client.post(f"{ctx.catalog_id}/product_feeds", data={"name": name})["id"])
        ctx.progress(f"created Meta product feed {feed_id} '{name}' in catalog {ctx.catalog_id}")
    with ctx.db() as con:
        con.execute(
            "INSERT INTO sync_state.feeds VALUES (?, ?, ?, ?, ?)",
            [ctx.tenant_id, shard, feed_id, name, ctx.now()],
        )
    return feed_id


# -- upload files and sessions ----------------------------------------------------------------------------------

UPLOAD_FIELDS = (
    "id,start_time,end_time,num_detected_items,num_persisted_items,num_invalid_items,num_deleted_items,"
    "error_count,warning_count"
)


def export_sql(where: str) -> str:
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    # _rn is the item's row number in the uploaded file (Meta's row_number: first data row = 1).
    return (
        f"SELECT row_number() OVER (ORDER BY id) AS _rn, {cols} FROM sync_state.desired_items WHERE {where}"
    )


def export_path(ctx: SyncContext, sync_id: str) -> Path:
    # guards.remove_stale_exports recognises these names: keep them in step.
    return ctx.workdir / f"{ctx.tenant_id}-{sync_id}.csv"


def write_feed_file(
    con: duckdb.DuckDBPyConnection, ctx: SyncContext, sync_id: str, select_sql: str, params: dict[str, Any]
) -> tuple[Path, int]:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    path = export_path(ctx, sync_id)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _export AS {select_sql}", params)
    n = con.execute("SELECT count(*) FROM _export").fetchone()[0]  # type: ignore[index]
    con.execute(
        f"COPY (SELECT * EXCLUDE (_rn) FROM _export ORDER BY _rn) TO {sql_str(str(path))} (HEADER, DELIMITER ',')"
    )
    return path, int(n)


def record_inflight(con: duckdb.DuckDBPyConnection, ctx: SyncContext, sync_id: str, method: str) -> None:
    """Items of _export (in file order) become in flight for sync_id."""
    con.execute(
        """INSERT INTO sync_state.inflight_items
           SELECT ?, ?, d.id, d.shard, ?, e._rn, d.content_hash, d.volatile_hash
           FROM _export e
           JOIN sync_state.desired_state d ON d.tenant_id = ? AND d.id = e.id""",
        [sync_id, ctx.tenant_id, method, ctx.tenant_id],
    )
    # Row number -> retailer id, so Meta's upload errors map back to items after confirmation.
    record_upload_rows(con, sync_id)


def upload_file(ctx: SyncContext, feed_id: str, path: Path, update_only: bool) -> str:
    data = {"update_only": "true"} if update_only else {}
    # A handle, streamed by the client (a file of a million items is never held in memory); the client seeks it
    # back to the start before a retried POST.
    with path.open("rb") as body:
        resp = ctx.client.post(f"{feed_id}/uploads", data=data, files={"file": (path.name, body, "text/csv")})
    return str(resp["id"])


def poll_upload(ctx: SyncContext, upload_id: str, timeout: float | None = None) -> dict[str, Any] | None:
    """Poll the upload session until end_time is set; None when the poll budget ran out (left to the sensor)."""
    deadline = time.monotonic() + (ctx.poll_timeout if timeout is None else timeout)
    while True:
        session = ctx.client.get(upload_id, params={"fields": UPLOAD_FIELDS})
        if session.get("end_time"):
            return session
        if time.monotonic() >= deadline:
            return None
        ctx.sleep(ctx.poll_interval)


def upload_error_rows(ctx: SyncContext, upload_id: str) -> list[int]:
    """Row numbers of items Meta rejected in an upload (fatal errors and their samples)."""
    rows: set[int] = set()
    for err in ctx.client.paginate(
        f"{upload_id}/errors", params={"fields": "id,severity,samples{row_number,retailer_id}"}
    ):
        if (err.get("severity") or "fatal") != "fatal":
            continue
        # Meta's SDK has row_number only on the samples of an error, not on the error itself.
        for s in (err.get("samples") or {}).get("data", []):
            if s.get("row_number") is not None:
                rows.add(int(s["row_number"]))
    return sorted(rows)
