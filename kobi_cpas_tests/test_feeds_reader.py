"""Feed fetching: conditional GET against a real local HTTP server, streaming to disk."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from kobi_cpas.feeds import FeedFetchError, fetch_feed
from kobi_cpas.feeds.reader import redact_url


class _FeedServer:
    """Serves one mutable body at /feed.csv with ETag / Last-Modified and conditional GET."""

    def __init__(self) -> None:
        self.body = b""
        self.mtime = time.time() - 3600
        self.requests: list[dict[str, str]] = []
        self.truncate = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                if not self.path.startswith("/feed.csv"):
                    self.send_error(404)
                    return
                etag = '"' + hashlib.md5(server.body).hexdigest() + '"'
                last_mod = email.utils.formatdate(server.mtime, usegmt=True)
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if (inm is not None and inm == etag) or (
                    inm is None
                    and ims is not None
                    and email.utils.parsedate_to_datetime(ims).timestamp() >= int(server.mtime)
                ):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", last_mod)
                self.send_header("Content-Type", "text/csv")
                if server.truncate:
                    self.send_header("Content-Length", str(len(server.body) + 1000))
                    self.end_headers()
                    self.wfile.write(server.body)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                for i in range(0, len(server.body), 65536):
                    self.wfile.write(server.body[i : i + 65536])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _FeedServer() as s:
        yield s


def test_conditional_get_returns_not_modified_with_etag(server, tmp_path):
    server.body = b"id,title\n" + b"".join(b"SKU-%d,Item %d\n" % (i, i) for i in range(200_000))  # ~3 MB
    dest = tmp_path / "feed.csv"
    first = fetch_feed(server.url + "/feed.csv", dest)
    assert not first.not_modified and first.status_code == 200
    assert first.path == dest and dest.read_bytes() == server.body
    assert first.sha256 == hashlib.sha256(server.body).hexdigest()
    assert first.size_bytes == len(server.body)
    assert first.etag == '"' + hashlib.md5(server.body).hexdigest() + '"'
    assert first.last_modified is not None

    second = fetch_feed(
        server.url + "/feed.csv", tmp_path / "again.csv", etag=first.etag, last_modified=first.last_modified
    )
    assert second.not_modified and second.status_code == 304
    assert second.path is None and second.etag == first.etag
    assert second.last_modified == first.last_modified  # echoed when the 304 has none
    assert not (tmp_path / "again.csv").exists()
    assert server.requests[-1]["If-None-Match"] == first.etag
    assert server.requests[-1]["If-Modified-Since"] == first.last_modified

    # Last-Modified alone also works
    third = fetch_feed(server.url + "/feed.csv", tmp_path / "lm.csv", last_modified=first.last_modified)
    assert third.not_modified

    # the feed changes: new ETag, full body
    server.body += b"SKU-new,New item\n"
    server.mtime = time.time()
    fourth = fetch_feed(server.url + "/feed.csv", dest, etag=first.etag)
    assert not fourth.not_modified and fourth.etag != first.etag
    assert fourth.sha256 == hashlib.sha256(server.body).hexdigest()
    assert not list(tmp_path.glob("*.partial"))


def test_http_error_does_not_leak_query_string(server, tmp_path):
    with pytest.raises(FeedFetchError) as ei:
        fetch_feed(server.url + "/missing.csv?token=s3cret", tmp_path / "x.csv")
    assert "404" in str(ei.value) and "s3cret" not in str(ei.value)
    assert "/missing.csv" in str(ei.value)
    assert not (tmp_path / "x.csv").exists()


def test_truncated_body_fails_and_leaves_no_file(server, tmp_path):
    server.body = b"id,title\n1,a\n"
    server.truncate = True
    with pytest.raises(FeedFetchError, match=r"feed download http://127\.0\.0\.1:\d+/feed\.csv"):
        fetch_feed(server.url + "/feed.csv?key=abc", tmp_path / "t.csv", timeout=5)
    assert not (tmp_path / "t.csv").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_local_file(tmp_path):
    p = tmp_path / "local.csv"
    p.write_bytes(b"id\n1\n")
    os.utime(p, (1_700_000_000, 1_700_000_000))
    r = fetch_feed(p)
    assert r.path == p and r.size_bytes == 5 and r.sha256 == hashlib.sha256(b"id\n1\n").hexdigest()
    assert fetch_feed(str(p), last_modified=r.last_modified).not_modified
    copy = fetch_feed(f"file://{p}", tmp_path / "copy" / "c.csv", copy_local=True)
    assert copy.path == tmp_path / "copy" / "c.csv" and Path(copy.path).read_bytes() == b"id\n1\n"
    with pytest.raises(FeedFetchError, match="not found"):
        fetch_feed(tmp_path / "nope.csv")


def test_redact_url():
    assert (
        redact_url("https://u:p@feeds.example.com:8443/a/b.csv?key=1#x")
        == "https://feeds.example.com:8443/a/b.csv"
    )
