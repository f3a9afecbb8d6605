"""Local HTTP feed servers for the feed download tests (a thread on 127.0.0.1 whose routes are plain functions
of the request handler), and a probe that tells whether another process can open a DuckDB file."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Handler", "LockProbe", "Server", "http_error", "redirect", "serve_file", "trickle"]

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    """A local HTTP server (a thread on 127.0.0.1) whose routes are plain functions of the request handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()
        server = self

        class _H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            do_HEAD = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_file(path: Path) -> Handler:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        body = path.read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def http_error(code: int) -> Handler:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_error(code)

    return route


def redirect(location: str) -> Handler:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def trickle(stop: threading.Event, *, headers_too: bool = False, on_start=None) -> Handler:
    """Send one byte every 0.2 s (of the headers too with ``headers_too``) until the server stops: the declared
    body is never all sent, so however slow the machine, a reader can only end the download through its own
    deadline."""
    size = 10**9

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        if headers_too:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
            for i in range(len(head)):
                if stop.is_set():
                    return
                h.wfile.write(head[i : i + 1])
                h.wfile.flush()
                time.sleep(0.2)
        else:
            h.send_response(200)
            h.send_header("Content-Length", str(size))
            h.end_headers()
        if on_start:
            on_start()
        h.wfile.write(b"id,title\n")
        while not stop.is_set():
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)

    return route


class LockProbe:
    """Another process, started (and duckdb imported) ahead of time, that answers whether it can open a
    DuckDB file right now (nobody holds its write lock). A check then takes milliseconds, not an interpreter
    start, so it ends well inside a short download deadline even on a loaded machine."""

    _CODE = (
        "import sys, duckdb\n"
        "for line in sys.stdin:\n"
        "    try:\n"
        "        duckdb.connect(line.rstrip('\\n')).close()\n"
        "        print('free', flush=True)\n"
        "    except duckdb.Error:\n"
        "        print('locked', flush=True)\n"
    )

    def __enter__(self) -> LockProbe:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.free(":memory:")  # started and duckdb imported
        return self

    def free(self, path: Path | str) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer in ("free", "locked"), answer
        return answer == "free"

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
