"""`make bench`'s catalog syncs against the Meta sandbox: a replace upload of the big feed and the fleet's change
sent after it (update upload, Batch API), each in its own process with its peak memory; and the exact request
counts of the sync methods."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from kobi_cpas.devenv.bench_phase import demo_tenant_registry, snapshot_feed, subprocess_json
from kobi_cpas.feeds.bench import PEAK_SNIPPET

_REPLACE_PHASE = (
    PEAK_SNIPPET
    + """
import json, sys, time
from pathlib import Path
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.versions import DEFAULT_API_VERSION
from kobi_cpas.registry import load_registry
from kobi_cpas.sync.methods import SyncContext, run_batch, run_replace, run_update
from kobi_cpas.sync.pending import resolve_pending
from kobi_cpas.sync.snapshot_step import take_snapshot
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse

phase, work, url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
reg = load_registry(work / "tenants.yaml")
tenant = reg.tenants[0]
wh = Warehouse(work / "kobi.duckdb", schema=SCHEMA)
out = {}
t = time.perf_counter()
if phase == "snapshot":
    with wh.connect() as con:
        s = take_snapshot(con, registry=reg, tenant=tenant, workdir=work / "w", force=True)
    if s.status != "ok":
        raise SystemExit(f"snapshot {s.status}: {s.message}")
else:
    client = MetaGraphClient(url, DEFAULT_API_VERSION, "bench-token", timeout=600)
    ctx = SyncContext(tenant=tenant, client=client, warehouse=wh, workdir=work / "w", poll_interval=0.5,
                      poll_timeout=3600)
    run = {"replace": run_replace, "update": run_update, "batch": run_batch}[phase]
    out["records"] = [r.status for r in run(ctx)]
    if phase == "batch":  # Meta takes a batch asynchronously: poll its handles until it is done
        resolve_pending(ctx, "batch")
        with wh.connect() as con:
            out["records"] = [r[0] for r in con.execute(
                "SELECT status FROM main.catalog_syncs WHERE tenant_id = ? AND method = 'batch'", [tenant.tenant_id]
            ).fetchall()]
    client.close()
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = PEAK()
print(json.dumps(out))
"""
)


def bench_replace_upload(n: int, out: Path) -> dict:
    """A replace upload of an ``n``-item feed through the real sync method, in its own process (its peak memory
    alone) against a sandbox in this one; the snapshot before it runs in another process. Then the fleet's change
    (:func:`kobi_cpas.feeds.generator.fleet_change`): its snapshot, update upload and Batch API calls, each in a
    process of its own (``after_change``)."""
    with tempfile.TemporaryDirectory(dir=out) as work:  # its files go with it
        return _replace_upload(n, out, Path(work))


def _replace_upload(n: int, out: Path, work: Path) -> dict:
    import duckdb

    from kobi_cpas.feeds.generator import fleet_change
    from kobi_cpas.meta.client import MetaGraphClient
    from kobi_cpas.meta.versions import DEFAULT_API_VERSION
    from kobi_cpas.registry import load_registry
    from meta_sandbox import SandboxServer, World
    from meta_sandbox.admin import SandboxAdmin

    feed = snapshot_feed(out, n)
    reg = load_registry(demo_tenant_registry(work, feed))
    fresh_peak = _reset_peak_rss()
    with SandboxServer(World.from_registry(reg.registry)) as server:
        admin = SandboxAdmin(server.url, timeout=600)
        admin.catalog_config(problem_rate_scale=0, batch_processing_seconds=0)
        snap = subprocess_json(_REPLACE_PHASE, "snapshot", str(work), server.url)
        res = subprocess_json(_REPLACE_PHASE, "replace", str(work), server.url)
        # Counted by Meta's own catalog field: listing a million items would cost the sandbox gigabytes.
        with MetaGraphClient(server.url, DEFAULT_API_VERSION, "bench-token") as client:
            at_meta = client.get(reg.tenants[0].catalog_id, {"fields": "product_count"})["product_count"]
        # Then the fleet's change, and the two syncs that send it, each in its own process too.
        changed = fleet_change(feed, work / "changed.csv", work / "volatile.csv")
        demo_tenant_registry(work, changed)
        with duckdb.connect() as con:
            (new_items,) = con.execute(  # type: ignore[misc]
                "SELECT count(*) FROM read_csv(?, all_varchar=true) WHERE id LIKE 'NEW-%'", [str(changed)]
            ).fetchone()
        admin.clear_requests()
        after = {
            phase: subprocess_json(_REPLACE_PHASE, phase, str(work), server.url) for phase in _CHANGE_PHASES
        }
        with MetaGraphClient(server.url, DEFAULT_API_VERSION, "bench-token") as client:
            after_count = client.get(reg.tenants[0].catalog_id, {"fields": "product_count"})["product_count"]
        requests = {name: admin.count_requests(route=route) for name, route in _CHANGE_ROUTES.items()}
    return {
        "n_items": n,
        "file_mb": feed.stat().st_size / 2**20,
        "replace_seconds": res["seconds"],
        "replace_peak_rss_mb": res["peak_rss_mb"],
        "snapshot_peak_rss_mb": snap["peak_rss_mb"],
        "records": res["records"],
        "items_at_meta": at_meta,
        # The sandbox serving the upload runs in this process: what a machine running make bench needs beside it.
        "sandbox_peak_rss_mb": _peak_rss_mb() if fresh_peak else None,
        "after_change": {
            **{f"{p}_{k}": after[p][k] for p in _CHANGE_PHASES for k in ("seconds", "peak_rss_mb")},
            "update_records": after["update"]["records"],
            "batch_records": after["batch"]["records"],
            "items_at_meta": after_count,
            "new_items": new_items,
            **requests,
        },
    }


# After the replace: the changed feed's snapshot, then the update upload (new and changed items) and the
# Batch API calls (price and stock), each measured in its own process; and the requests that carried them.
_CHANGE_PHASES = ("snapshot", "update", "batch")
_CHANGE_ROUTES = {"update_uploads": "product_feed.uploads.create", "items_batch_calls": "catalog.items_batch"}


def _reset_peak_rss() -> bool:
    """Start this process's peak RSS (Linux: VmHWM) afresh, so that the next reading is the phase's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def bench_request_counts(n: int, out: Path) -> dict:
    """Run the real sync methods against an in-process sandbox and count the requests it received."""
    with tempfile.TemporaryDirectory(dir=out) as work:  # its files go with it
        return _request_counts(n, out, Path(work))


def _request_counts(n: int, out: Path, work: Path) -> dict:
    import duckdb

    from kobi_cpas.feeds.generator import generate_feed
    from kobi_cpas.meta.client import MetaGraphClient
    from kobi_cpas.meta.versions import DEFAULT_API_VERSION
    from kobi_cpas.registry import load_registry
    from kobi_cpas.sync.methods import SyncContext, run_batch, run_replace, run_update
    from kobi_cpas.sync.snapshot_step import take_snapshot
    from kobi_cpas.tables import SCHEMA
    from kobi_cpas.warehouse import Warehouse
    from meta_sandbox import SandboxServer, World
    from meta_sandbox.admin import SandboxAdmin

    feed = work / "feed.csv"
    generate_feed(feed, n, seed=3)
    reg = load_registry(demo_tenant_registry(work, feed))
    tenant = reg.tenants[0]
    wh = Warehouse(work / "kobi.duckdb", schema=SCHEMA)
    result: dict = {"n_items": n}
    with SandboxServer(World.from_registry(reg.registry)) as server:
        admin = SandboxAdmin(server.url)
        admin.catalog_config(problem_rate_scale=0, batch_processing_seconds=0)
        client = MetaGraphClient(server.url, DEFAULT_API_VERSION, "bench-token")
        ctx = SyncContext(tenant=tenant, client=client, warehouse=wh, workdir=work / "w", poll_interval=0.05)
        with wh.connect() as con:
            take_snapshot(con, registry=reg, tenant=tenant, workdir=work / "w", force=True)
        started = time.perf_counter()
        run_replace(ctx)
        result["replace_seconds"] = time.perf_counter() - started
        # K volatile-only changes + 3 new items + 2 content changes
        con = duckdb.connect()
        con.execute(f"CREATE TABLE f AS SELECT * FROM read_csv('{feed}', all_varchar=true)")
        k = con.execute(
            "SELECT count(*) FROM f WHERE sale_price IS NULL AND availability = 'in stock'"
        ).fetchone()[0]
        con.execute(
            "UPDATE f SET quantity_to_sell_on_facebook = '999' WHERE sale_price IS NULL AND availability = 'in stock'"
        )
        con.execute("UPDATE f SET title = title || ' v2' WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 2)")
        con.execute(
            "INSERT INTO f SELECT * REPLACE ('NEW-' || id AS id, NULL AS item_group_id) FROM f LIMIT 3"
        )
        con.execute(f"COPY f TO '{feed}' (HEADER, DELIMITER ',')")
        con.close()
        with wh.connect() as c2:
            take_snapshot(c2, registry=reg, tenant=tenant, workdir=work / "w", force=True)
        admin.clear_requests()
        run_update(ctx)
        started = time.perf_counter()
        run_batch(ctx)
        result["batch_seconds"] = time.perf_counter() - started
        result["volatile_only_items"] = int(k)
        result["items_batch_calls"] = admin.count_requests(route="catalog.items_batch")
        result["expected_items_batch_calls"] = math.ceil(k / 5000)
        result["update_uploads"] = admin.count_requests(route="product_feed.uploads.create")
        admin.clear_requests()
        run_update(ctx)
        run_batch(ctx)
        result["requests_on_rerun"] = admin.count_requests(
            route="catalog.items_batch"
        ) + admin.count_requests(route="product_feed.uploads.create")
        result["exact"] = (
            result["items_batch_calls"] == result["expected_items_batch_calls"]
            and result["update_uploads"] == 1
            and result["requests_on_rerun"] == 0
        )
        client.close()
    return result


def print_syncs(u: dict, q: dict) -> None:
    """Print the replace upload (``u``) and request count (``q``) results."""
    print(
        f"replace upload of {u['n_items']:,} items ({u['file_mb']:.0f} MB feed): {u['replace_seconds']:.1f} s, "
        f"peak {u['replace_peak_rss_mb']:.0f} MB (target <= 1536 MB; the snapshot before it {u['snapshot_peak_rss_mb']:.0f} "
        f"MB); {u['items_at_meta']:,} items at Meta, shards {u['records']}"
        + (
            f"; the sandbox serving it peaked at {u['sandbox_peak_rss_mb']:.0f} MB"
            if u.get("sandbox_peak_rss_mb")
            else ""
        )
    )
    a = u["after_change"]
    print(
        f"  then the fleet's change (1 % price or stock, 0.2 % new, 0.2 % removed), each in its own process: "
        f"snapshot {a['snapshot_seconds']:.1f} s, peak {a['snapshot_peak_rss_mb']:.0f} MB; update upload "
        f"{a['update_seconds']:.1f} s, peak {a['update_peak_rss_mb']:.0f} MB ({a['update_uploads']} upload); Batch API "
        f"{a['batch_seconds']:.1f} s, peak {a['batch_peak_rss_mb']:.0f} MB ({a['items_batch_calls']} items_batch "
        f"calls); {a['items_at_meta']:,} items at Meta (target <= 1536 MB each)"
    )
    print(
        f"requests at {q['n_items']:,} items: {q['volatile_only_items']:,} volatile-only -> {q['items_batch_calls']} "
        f"items_batch calls (expected {q['expected_items_batch_calls']}), {q['update_uploads']} update upload, "
        f"{q['requests_on_rerun']} requests on re-run; exact: {q['exact']}"
    )
