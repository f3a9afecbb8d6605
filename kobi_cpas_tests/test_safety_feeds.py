"""Safety of the feed snapshot step (download + ingest): a total download deadline and size cap outside the
DuckDB writer, every download failure recorded like an unreadable file, exact local change detection, no
secrets from feed URLs anywhere, honest parser messages, and the shrink guard. End-to-end cases run the real
Dagster jobs against the sandbox through the SyncHarness of kobi_cpas_tests.sync_harness."""

from __future__ import annotations

import http.server
import logging
import os
import random
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.feeds import FeedFetchError, fetch_feed
from kobi_cpas.feeds.reader import FetchLimits, redact_source
from kobi_cpas.registry import load_registry
from kobi_cpas.sync.snapshot_step import take_snapshot
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.feed_http import LockProbe, Server, http_error, redirect, serve_file, trickle
from kobi_cpas_tests.sync_harness import TENANT, SyncHarness, synced_world_fixtures
from kobi_cpas_tests.warehouse_template import seed_work_database

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

# -- A: total deadline and size cap (pure reader) ----------------------------------------------------------------


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_trickling_download_stops_at_the_total_deadline(tmp_path, headers_too):
    with Server() as srv:
        # The server never finishes sending: the fetch can only end through its total deadline.
        srv.routes["/slow.csv"] = trickle(srv.stop, headers_too=headers_too)
        with pytest.raises(FeedFetchError) as ei:
            fetch_feed(
                srv.url + "/slow.csv?token=s3cret",
                tmp_path / "f.csv",
                limits=FetchLimits(deadline_seconds=1.0),
            )
    msg = str(ei.value)
    assert "deadline" in msg and "1 s" in msg and "s3cret" not in msg
    assert not (tmp_path / "f.csv").exists()
    # The abandoned worker removes its partial file once the server closed its socket (no time bound here:
    # pytest-timeout ends a hung test).
    while list(tmp_path.glob("*.partial")):
        time.sleep(0.1)
    assert not list(tmp_path.glob("*.partial"))


def test_size_cap_stops_announced_and_unannounced_bodies(tmp_path):
    big = b"id,title\n" + b"a" * (3 << 20)

    def unannounced(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()  # HTTP/1.0: the body runs until the connection closes
        h.wfile.write(big)

    with Server() as srv:
        srv.routes["/announced.csv"] = serve_file(_write(tmp_path / "big.csv", big))
        srv.routes["/unannounced.csv"] = unannounced
        lim = FetchLimits(max_bytes=1 << 20)
        with pytest.raises(
            FeedFetchError, match=r"announces 3,145,737 bytes, over the size cap of 1,048,576"
        ):
            fetch_feed(srv.url + "/announced.csv", tmp_path / "a.csv", limits=lim)
        with pytest.raises(FeedFetchError, match=r"sent more than 1,048,576 bytes"):
            fetch_feed(srv.url + "/unannounced.csv", tmp_path / "b.csv", limits=lim)
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


def test_only_http_and_local_sources_are_allowed(tmp_path):
    with pytest.raises(FeedFetchError, match="the scheme 'ftp' is not allowed"):
        fetch_feed("ftp://user:pw@feeds.example.com/f.csv", tmp_path / "f.csv")
    (tmp_path / "root").mkdir()
    outside = _write(tmp_path / "f.csv", b"id\n1\n")
    with pytest.raises(FeedFetchError, match="outside the feeds root"):
        fetch_feed(outside, feeds_root=tmp_path / "root")
    with pytest.raises(FeedFetchError, match="outside the feeds root"):
        fetch_feed(tmp_path / "root" / ".." / "f.csv", feeds_root=tmp_path / "root")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- Dagster end to end ------------------------------------------------------------------------------------------


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch):
    def make(**sync):
        return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch, **sync)

    return make


N = 20  # items of the synced world


world, synced = synced_world_fixtures(N)


def _set_feed(h: SyncHarness, **feed) -> None:
    """Point the harness tenant's feed elsewhere (the registry is re-read by every run)."""
    reg = Path(os.environ["KOBI_CPAS_TENANTS"])
    doc = yaml.safe_load(reg.read_text())
    doc["tenants"][0]["feed"] = {"format": "csv", **feed}
    reg.write_text(yaml.safe_dump(doc))


def _check(res: dg.ExecuteInProcessResult, name: str):
    return next(e for e in res.get_asset_check_evaluations() if e.check_name == name)


def _only_blocked_by_checks(res: dg.ExecuteInProcessResult) -> bool:
    """The run stopped because a blocking check failed, not because a step crashed with a stack trace."""
    errors = [e.step_failure_data.error for e in res.get_step_failure_events()]
    return bool(errors) and all(err.cls_name == "DagsterAssetCheckFailedError" for err in errors)


def _rows(h: SyncHarness, sql: str, params=()) -> list[tuple]:
    with h.wh.connect() as con:
        return con.execute(sql, list(params)).fetchall()


def test_slow_feed_stops_at_deadline_and_never_holds_the_work_database(synced):
    h = synced()  # N items replaced
    before = h.meta_items()
    seen: list[bool] = []
    with LockProbe() as probe, Server() as srv:
        with h.wh.connect():  # the probe tells a held work database from a free one
            assert not probe.free(h.wh.work_path)
        assert probe.free(h.wh.work_path)
        srv.routes["/slow.csv"] = trickle(srv.stop, on_start=lambda: seen.append(probe.free(h.wh.work_path)))
        _set_feed(h, source=srv.url + "/slow.csv?access_key=k1", download_deadline_seconds=3)
        res = h.run("catalog_update_job")
    assert seen == [True]  # the download ran with the work database closed
    assert not res.success
    ev = _check(res, "feed_file_readable")
    assert not ev.passed and "deadline" in ev.description and TENANT in ev.description
    assert "access_key=REDACTED" in ev.description and "k1" not in ev.description
    assert _only_blocked_by_checks(res)  # recorded, not a stack trace
    (status, msg), *_ = _rows(h, "SELECT status, message FROM feed_snapshots ORDER BY taken_at DESC LIMIT 1")
    assert status == "failed" and "deadline" in msg
    assert h.meta_items() == before


@pytest.mark.parametrize(
    "case",
    ["refused", "http_404", "http_500", "redirect_file", "redirect_loopback"],
)
def test_download_failures_are_recorded_like_an_unreadable_file(synced, case):
    h = synced()  # N items replaced
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    with Server() as srv:
        srv.routes["/404.csv"] = http_error(404)
        srv.routes["/500.csv"] = http_error(500)
        srv.routes["/to-file.csv"] = redirect("file:///etc/passwd")
        srv.routes["/to-loopback.csv"] = redirect(f"http://localhost:{srv.port}/feed.csv")
        srv.routes["/feed.csv"] = serve_file(h.feed)
        url, expected = {
            "refused": (f"http://127.0.0.1:{closed_port}/feed.csv", "connection refused"),
            "http_404": (srv.url + "/404.csv", "HTTP 404"),
            "http_500": (srv.url + "/500.csv", "HTTP 500"),
            "redirect_file": (srv.url + "/to-file.csv", "redirects to a file://"),
            "redirect_loopback": (srv.url + "/to-loopback.csv", "private or loopback address"),
        }[case]
        _set_feed(h, source=url)
        res = h.run("catalog_update_job")
        assert not res.success and _only_blocked_by_checks(res)
        ev = _check(res, "feed_file_readable")
        assert not ev.passed and expected in ev.description and TENANT in ev.description
        snap = _rows(h, "SELECT status, message, source FROM feed_snapshots ORDER BY taken_at DESC LIMIT 1")[
            0
        ]
        assert snap[0] == "failed" and expected in snap[1] and snap[2] == redact_source(url)
        issue = _rows(
            h, "SELECT severity, message, call_to_action FROM feed_item_issues WHERE code = 'feed_file_error'"
        )
        assert len(issue) == 1 and issue[0][0] == "error" and expected in issue[0][1] and issue[0][2]
        if case == "redirect_loopback":
            # the tenant may allow private redirects: then the same URL works
            _set_feed(h, source=url, allow_private_redirects=True)
            assert h.run("catalog_update_job").success
            assert not _rows(h, "SELECT * FROM feed_item_issues WHERE code = 'feed_file_error'")
    if case == "http_500":
        assert h.run("catalog_diagnostics_job").success
        with duckdb.connect(str(h.env.analyst_path), read_only=True) as con:
            diag = con.execute(
                "SELECT source, priority, call_to_action, description FROM catalog_diagnostics "
                "WHERE error_type = 'FEED_FILE_ERROR' AND is_open"
            ).fetchall()
        assert len(diag) == 1 and diag[0][0] == "kobi_feed_validation" and diag[0][1] == "HIGH"
        assert diag[0][2] and "HTTP 500" in diag[0][3]


def test_local_feed_outside_the_feeds_root_is_refused(synced, tmp_path_factory):
    h = synced()  # N items replaced
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "feed.csv"
    elsewhere.write_bytes(h.feed.read_bytes())
    _set_feed(h, source=str(elsewhere))
    res = h.run("catalog_update_job")
    ev = _check(res, "feed_file_readable")
    assert not ev.passed and "outside the feeds root" in ev.description
    _set_feed(h, source=str(elsewhere), feeds_root=str(elsewhere.parent))
    assert h.run("catalog_update_job").success


# -- C: local change detection -----------------------------------------------------------------------------------


def _local_setup(tmp_path: Path, rows: list[str]):
    feed = tmp_path / "feed.csv"
    reg_path = tmp_path / "tenants.yaml"
    reg_path.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {"tenant_id": "t1", "business_id": "1", "catalog_id": "2", "feed": {"source": str(feed)}}
                ]
            }
        )
    )
    feed.write_text(_csv(rows), encoding="utf-8")
    reg = load_registry(reg_path)
    return feed, reg, reg.tenant("t1"), Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)


_HEAD = "id,title,description,availability,condition,price,link,image_link,brand"


def _csv(prices: list[str]) -> str:
    lines = [_HEAD] + [
        f"sku-{i},Item {i},Desc {i},in stock,new,{p},https://x.example/{i},https://x.example/{i}.jpg,B"
        for i, p in enumerate(prices)
    ]
    return "\n".join(lines) + "\n"


def _prices(wh: Warehouse) -> list[str]:
    with wh.connect() as con:
        return [
            r[0] for r in con.execute("SELECT price FROM sync_state.desired_items ORDER BY id").fetchall()
        ]


@pytest.mark.parametrize("same_size", [True, False])
def test_feed_rewritten_within_the_same_second_is_picked_up(tmp_path, same_size):
    feed, reg, tenant, wh = _local_setup(tmp_path, ["10.00 TRY", "20.00 TRY"])
    now = time.time()
    stamp = int(now) * 1_000_000_000 + 100_000_000  # .1 s into the current second
    os.utime(feed, ns=(stamp, stamp))
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with wh.connect() as con:
        assert take_snapshot(con, registry=reg, tenant=tenant, workdir=tmp_path / "w", now=t0).status == "ok"
    # rewritten in the same second: same size (same stat, a coarse clock) or one byte longer (.5 s later)
    feed.write_text(
        _csv(["11.00 TRY", "20.00 TRY"] if same_size else ["110.00 TRY", "20.00 TRY"]), encoding="utf-8"
    )
    later = stamp if same_size else stamp + 400_000_000
    os.utime(feed, ns=(later, later))
    with wh.connect() as con:
        out = take_snapshot(
            con, registry=reg, tenant=tenant, workdir=tmp_path / "w", now=t0 + timedelta(hours=1)
        )
    assert out.status == "ok"
    assert _prices(wh)[0] == ("11.00 TRY" if same_size else "110.00 TRY")


def test_unchanged_old_feed_is_not_reread_and_a_feed_changing_while_read_is_deferred(tmp_path, monkeypatch):
    feed, reg, tenant, wh = _local_setup(tmp_path, ["10.00 TRY", "20.00 TRY"])
    old = time.time() - 3600
    os.utime(feed, (old, old))
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with wh.connect() as con:
        assert take_snapshot(con, registry=reg, tenant=tenant, workdir=tmp_path / "w", now=t0).status == "ok"
        again = take_snapshot(
            con, registry=reg, tenant=tenant, workdir=tmp_path / "w", now=t0 + timedelta(hours=1)
        )
    assert again.status == "not_modified"

    import kobi_cpas.feeds.reader as reader

    real = reader.file_sha256

    def hash_while_a_writer_appends(path, *a, **kw):
        result = real(path, *a, **kw)
        with open(path, "a", encoding="utf-8") as f:
            f.write("sku-9,Item 9,D,in stock,new,1.00 TRY,https://x.example/9,https://x.example/9.jpg,B\n")
        return result

    monkeypatch.setattr(reader, "file_sha256", hash_while_a_writer_appends)
    feed.write_text(_csv(["12.00 TRY", "20.00 TRY"]), encoding="utf-8")
    with wh.connect() as con:
        out = take_snapshot(
            con, registry=reg, tenant=tenant, workdir=tmp_path / "w", now=t0 + timedelta(hours=2)
        )
    assert out.status == "failed" and "being written" in out.message and "retried next run" in out.message
    assert _prices(wh)[0] == "10.00 TRY"  # the previous snapshot stays


# -- D: secrets in feed URLs -------------------------------------------------------------------------------------

CANARY_PASS = "Canary7PassQz"
CANARY_KEY = "Canary7KeyWx"


def test_redact_source():
    assert (
        redact_source("https://u:p@feeds.example.com:8443/a/b.csv?access_key=1&lang=tr&apiKey=2&sig=3#frag")
        == "https://feeds.example.com:8443/a/b.csv?access_key=REDACTED&lang=tr&apiKey=REDACTED&sig=REDACTED"
    )
    assert redact_source("/data/feeds/x.csv") == "/data/feeds/x.csv"
    for name in ("key", "token", "secret", "password", "signature", "auth", "X-Amz-Signature"):
        assert "zz9" not in redact_source(f"https://h/f.csv?{name}=zz9")


def _tables_with(path: Path, needles: tuple[str, ...]) -> list[str]:
    found = []
    with duckdb.connect(str(path), read_only=True) as con:
        rels = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal "
            "AND database_name = current_database()"
        ).fetchall()
        for schema, name in rels:
            cond = " OR ".join(f"CAST(t AS VARCHAR) LIKE '%{n}%'" for n in needles)
            (n,) = con.execute(f'SELECT count(*) FROM "{schema}"."{name}" AS t WHERE {cond}').fetchone()
            if n:
                found.append(f"{schema}.{name}")
    return found


def test_canary_credentials_appear_nowhere(harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = harness()
    h.write_feed(25)
    needles = (CANARY_PASS, CANARY_KEY)
    with Server() as srv:
        srv.routes["/feed.csv"] = serve_file(h.feed)
        url = f"http://kobi:{CANARY_PASS}@127.0.0.1:{srv.port}/feed.csv?access_key={CANARY_KEY}&lang=tr"
        _set_feed(h, source=url)
        runs = [h.defs.resolve_job_def("tenant_registry_job").execute_in_process(instance=h.instance)]
        runs.append(h.run("catalog_replace_job"))
        assert runs[-1].success
        srv.routes["/feed.csv"] = http_error(503)
        runs.append(h.run("catalog_update_job"))
        assert not runs[-1].success
    rows = _rows(h, "SELECT status, source FROM feed_snapshots ORDER BY taken_at")
    assert [r[0] for r in rows] == ["ok", "failed"]
    assert all("access_key=REDACTED&lang=tr" in r[1] for r in rows)
    assert _rows(h, "SELECT feed_source FROM tenant_registry")[0][0].endswith("?access_key=REDACTED&lang=tr")
    assert _tables_with(h.wh.work_path, needles) == []
    assert _tables_with(h.env.analyst_path, needles) == []
    for res in runs:
        for record in h.instance.all_logs(res.run_id):
            text = str(record)
            assert not any(n in text for n in needles), text[:500]
    assert not [r.getMessage() for r in caplog.records if any(n in r.getMessage() for n in needles)]
    workdir = h.wh.work_dir / "feeds" / TENANT
    assert not any(n in p.read_text(errors="replace") for p in workdir.glob("*.json") for n in needles)


# -- E: honest parser messages -----------------------------------------------------------------------------------


def test_binary_garbage_and_xml_in_a_csv_tenant_are_named_as_such(tmp_path):
    feed, reg, tenant, wh = _local_setup(tmp_path, ["10.00 TRY"])
    rnd = random.Random(1)
    # ASCII-range garbage (valid UTF-8, tabs and control bytes, no newline): used to read as "tab-separated"
    feed.write_bytes(bytes(rnd.choice([b for b in range(128) if b != 10]) for _ in range(4096)))
    with wh.connect() as con:
        out = take_snapshot(con, registry=reg, tenant=tenant, workdir=tmp_path / "w")
    assert out.status == "failed"
    assert "looks like binary data, not a CSV/TSV/XML feed" in out.message
    assert "separated" not in out.message and str(feed) in out.message and "'t1'" in out.message
    feed.write_text(
        '<?xml version="1.0"?>\n<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id>'
        "</item></channel></rss>\n",
        encoding="utf-8",
    )
    with wh.connect() as con:
        out = take_snapshot(con, registry=reg, tenant=tenant, workdir=tmp_path / "w")
    assert "this file looks like XML but the tenant's feed.format is csv" in out.message
    assert "found: none" not in out.message and str(feed) in out.message and "'t1'" in out.message


# -- F: shrink guard ---------------------------------------------------------------------------------------------


def _meta_state(h: SyncHarness) -> dict[str, tuple]:
    return {
        rid: (it.get("availability"), it.get("price"), it.get("quantity_to_sell_on_facebook"))
        for rid, it in h.meta_items().items()
    }


def _keep_first(n: int) -> str:
    return f"DELETE FROM f WHERE id NOT IN (SELECT id FROM f ORDER BY id LIMIT {n})"


def test_feed_cut_short_is_held_until_confirmed_by_different_content(synced):
    h = synced()  # write_feed(20) and a successful replace
    assert N == 20
    meta_before, desired_before = _meta_state(h), h.desired()
    assert len(meta_before) == 20

    h.write_feed(20, _keep_first(8))  # a valid CSV cut at a row boundary
    for _ in range(2):  # the same content read again stays held
        res = h.run("catalog_replace_job")
        assert not res.success
        ev = _check(res, "feed_shrink_guard")
        assert not ev.passed
        assert "from 20" in ev.description and "to 8" in ev.description and "60.0%" in ev.description
        assert "20% threshold" in ev.description
        assert _check(res, "feed_file_readable").passed
        assert _meta_state(h) == meta_before  # item by item: nothing flipped out of stock
        assert h.desired() == desired_before
    held = _rows(h, "SELECT status, valid_count, removed_count FROM feed_snapshots WHERE status = 'held'")
    assert held == [("held", 8, 12), ("held", 8, 12)]
    with duckdb.connect(str(h.env.analyst_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM feed_items").fetchone() == (20,)
        state = dict(con.execute("SELECT retailer_id, availability FROM catalog_item_state").fetchall())
    assert state == {rid: avail for rid, (avail, _, _) in meta_before.items()}

    h.write_feed(20, _keep_first(9))  # different content, still the drop: it is real
    # the replace's own deletion guard also counts flips to out of stock: a person lets this one through
    res = h.run("catalog_replace_job", tags={"kobi/override_deletion_guard": "true"})
    assert res.success
    ev = _check(res, "feed_shrink_guard")
    assert ev.passed and "confirmed" in ev.description
    ok = _rows(
        h,
        "SELECT valid_count, removed_count, retained_count FROM feed_snapshots ORDER BY taken_at DESC LIMIT 1",
    )
    assert ok == [(9, 11, 11)]  # 11 previously valid items left the feed, all retained out of stock
    removed = set(sorted(meta_before)[9:])
    after = _meta_state(h)
    assert {rid for rid in removed if after[rid][0] == "out of stock"} == removed
    assert {rid: v for rid, v in after.items() if rid not in removed} == {
        rid: v for rid, v in meta_before.items() if rid not in removed
    }


def test_shrink_override_tag_and_invalid_share(synced):
    h = synced()  # write_feed(20) and a successful replace
    assert N == 20
    meta_before = _meta_state(h)
    # 10 previously valid items turn invalid: same row count, half the catalog would be frozen
    h.write_feed(20, "UPDATE f SET price = '12,5' WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 10)")
    res = h.run("catalog_update_job")
    ev = _check(res, "feed_shrink_guard")
    assert not ev.passed and "10 of 20 previously valid items (50.0%) turned invalid" in ev.description
    assert "invalid_price_format (10)" in ev.description
    assert _meta_state(h) == meta_before
    assert _rows(h, "SELECT status, valid_count FROM feed_snapshots ORDER BY taken_at DESC LIMIT 1") == [
        ("held", 10)
    ]
    # a person who knows the drop is intended overrides one run
    res = h.run("catalog_update_job", tags={"kobi/override_shrink_guard": "true"})
    assert res.success
    assert "overridden" in _check(res, "feed_shrink_guard").description
    assert _rows(h, "SELECT status, removed_count FROM feed_snapshots ORDER BY taken_at DESC LIMIT 1") == [
        ("ok", 0)
    ]
    kept = _rows(h, "SELECT count(*) FROM sync_state.desired_items WHERE status = 'invalid_kept'")
    assert kept == [(10,)]  # the items that turned invalid keep their last valid version
