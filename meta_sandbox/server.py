"""The sandbox WSGI app (werkzeug) and the server that runs it on loopback in a background thread.

Graph URLs are ``/<version>/<id>``, ``/<version>/<id>/<edge>`` and a few fixed paths. Like the real Graph API,
the sandbox dispatches ``/<id>`` by the *type of the object* the id names, so route modules register handlers
per (node kind, edge, method) on a ``Router`` (``routing.py``; handlers get a ``RequestContext``, ``context.py``;
both are re-exported here)::

    def register(router: Router) -> None:
        @router.edge("catalog", "product_feeds", name="catalog.product_feeds", methods=("GET",))
        def list_feeds(ctx: RequestContext) -> dict:
            catalog = ctx.node
            return ctx.paginate([...])

Fixed paths (``/<version>/catalog_all_errors``) use ``router.path``; admin routes (``/__sandbox/...``) use
``router.admin``. ``default_router()`` registers every module in ``ROUTE_MODULES``; a later issue adds its
``routes_<domain>`` module there.

Order of a Graph call: access token -> appsecret_proof -> route -> injected fault -> handler (under
``world.lock``) -> usage headers -> request log. Slow/timeout faults wait outside the lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from kobi_cpas.meta.versions import MARKETING_API_VERSIONS, VersionState, version_status
from meta_sandbox import errors as gerr
from meta_sandbox.context import (
    SECRET_PARAMS,
    RequestContext,
    decode_cursor,
    encode_cursor,
    request_json_object,
    served_fields,
)
from meta_sandbox.errors import GraphError
from meta_sandbox.faults import DELAY_KINDS, PAGE_KINDS, FaultInjector, fault_error
from meta_sandbox.routing import (
    DEFAULT_PAGE_LIMIT,
    FAMILY_ADS,
    FAMILY_CATALOG,
    FAMILY_INSIGHTS,
    MAX_PAGE_LIMIT,
    Handler,
    Route,
    Router,
    default_router,
)
from meta_sandbox.state import World

log = logging.getLogger("meta_sandbox")


# -- the WSGI app ---------------------------------------------------------------------------------------


def _json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    resp = Response(body, status=status, content_type="application/json; charset=UTF-8")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _trace_id(seed: int, seq: int) -> str:
    digest = hashlib.sha256(f"{seed}:trace:{seq}".encode()).digest()
    return "A" + re.sub(r"[^A-Za-z0-9]", "", base64.b64encode(digest).decode())[:22]


class SandboxApp:
    """The WSGI application: Graph routes, admin routes, faults, usage headers and the request log."""

    def __init__(
        self,
        world: World,
        router: Router | None = None,
        *,
        app_secret: str | None = None,
        require_appsecret_proof: bool = False,
        log_requests: bool = False,
        max_logged_requests: int = 20_000,
    ) -> None:
        self.world = world
        self.router = router or default_router()
        self.graph_map = self.router.graph_map()
        self.admin_map = self.router.admin_map()
        self.faults = FaultInjector(world.seed)
        self.app_secret = app_secret
        self.require_appsecret_proof = require_appsecret_proof
        self._initial_config = (app_secret, require_appsecret_proof)
        self._initial_seed = world.seed
        self.log_requests = log_requests
        self.stop_event = threading.Event()
        self.nonces = itertools.count(1)
        self._seq = itertools.count(1)
        self._log_lock = threading.Lock()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=max_logged_requests)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/__sandbox" or request.path.startswith("/__sandbox/"):
            response = self._admin(request)
        else:
            response = self._graph(request)
        return response(environ, start_response)

    # -- admin ------------------------------------------------------------------------------------------

    def _admin(self, request: Request) -> Response:
        adapter = self.admin_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return _json_response({"error": f"no sandbox admin route {request.path}"}, 404)
        except MethodNotAllowed:
            return _json_response({"error": f"{request.method} not allowed on {request.path}"}, 405)
        route = self.router.by_name[endpoint]
        try:
            result = route.handler(self, request, **args)
        except (ValueError, KeyError, TypeError) as exc:
            status = 404 if isinstance(exc, KeyError) else 400
            return _json_response({"error": str(exc).strip("'\"")}, status)
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            return _json_response(result[0], result[1])
        return _json_response(result)

    def reset(self, seed: int | None = None) -> None:
        """Rebuild the world from the registry and seed, drop every fault rule and the request log, and
        restore the app secret settings the server started with."""
        self.world.reset(self._initial_seed if seed is None else seed)
        self.app_secret, self.require_appsecret_proof = self._initial_config
        self.faults.clear(seed=self.world.seed)
        self.clear_request_log()

    def clear_request_log(self) -> None:
        with self._log_lock:
            self.request_log.clear()

    def logged_requests(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return [dict(e) for e in self.request_log]

    # -- graph ------------------------------------------------------------------------------------------

    def _safe_query(self, request: Request) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in request.args.items():
            if k == "access_token":
                continue
            out[k] = "[present]" if k == "appsecret_proof" else v[:500]
        return out

    def _param_names(self, request: Request) -> list[str]:
        """Names of every query, form, JSON-body and file parameter (never a value: the token may be one)."""
        names = set(request.args)
        if request.method in ("POST", "DELETE"):
            if request.mimetype == "application/json":
                body = request.get_json(silent=True)
                names.update(body if isinstance(body, dict) else ())
            else:
                names.update(request.form)
                names.update(request.files)
        return sorted(names - SECRET_PARAMS)

    def _fields_value(self, request: Request) -> str | None:
        """The whole ``fields`` value (the logged query keeps only 500 characters of it)."""
        raw = request.args.get("fields")
        if raw is None and request.method in ("POST", "DELETE") and request.mimetype != "application/json":
            raw = request.form.get("fields")
        return raw

    def _check_token(self, ctx: RequestContext) -> str:
        request = ctx.request
        token = None
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and value.strip():
            token = value.strip()
        if token is None:
            token = request.args.get("access_token") or (
                request.form.get("access_token") if request.method in ("POST", "DELETE") else None
            )
        if not token:
            raise gerr.missing_token()
        if token.startswith("EXPIRED"):
            raise gerr.expired_token()
        if token.startswith("INVALID"):
            raise gerr.invalid_token()
        if token.startswith("MALFORMED"):
            raise gerr.malformed_token(token)
        if token.startswith("NOPERM"):
            raise gerr.permission_error()
        return token

    def _check_proof(self, ctx: RequestContext, token: str) -> str:
        proof = ctx.request.args.get("appsecret_proof") or (
            ctx.request.form.get("appsecret_proof") if ctx.method in ("POST", "DELETE") else None
        )
        if not proof:
            if self.app_secret and self.require_appsecret_proof:
                raise gerr.missing_appsecret_proof()
            return "absent"
        if not self.app_secret:
            return "unchecked"
        expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, proof):
            raise gerr.invalid_appsecret_proof()
        return "valid"

    def _resolve(self, ctx: RequestContext) -> GraphError | None:
        """Find the route; an unknown object/edge becomes a pending error (faults may still fire first)."""
        adapter = self.graph_map.bind_to_environ(ctx.request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return gerr.unknown_path(ctx.request.path)
        except MethodNotAllowed:
            return gerr.unknown_object(ctx.request.path.rsplit("/", 1)[-1], ctx.method)
        ctx.version = args.get("version")
        if ctx.version and version_status(ctx.version, self.world.now().date()).state is VersionState.RETIRED:
            return gerr.version_retired(
                max(MARKETING_API_VERSIONS, key=lambda v: MARKETING_API_VERSIONS[v][0])
            )
        if endpoint not in ("__node__", "__edge__"):
            ctx.route = self.router.by_name[endpoint]
            return None
        node_id = args["node_id"]
        with self.world.lock:
            found = self.world.get(node_id)
            business_id = self.world.business_id_of(node_id) if found else None
        if found is None:
            return gerr.unknown_object(node_id, ctx.method)
        ctx.node_id, (ctx.kind, ctx.node) = node_id, found
        ctx.business_id = business_id
        if endpoint == "__node__":
            ctx.route = self.router.nodes.get((ctx.kind, ctx.method))
            return None if ctx.route else gerr.unknown_object(node_id, ctx.method)
        ctx.edge = args["edge"]
        ctx.route = self.router.edges.get((ctx.kind, ctx.edge, ctx.method))
        if ctx.route:
            return None
        if any(k[0] == ctx.kind and k[1] == ctx.edge for k in self.router.edges):
            return gerr.unknown_object(node_id, ctx.method)
        return gerr.nonexisting_field(ctx.edge, self.world.type_name(ctx.kind))

    def _graph(self, request: Request) -> Response:
        started = time.monotonic()
        seq = next(self._seq)
        entry: dict[str, Any] = {
            "seq": seq,
            "at": self.world.now().isoformat(),
            "method": request.method,
            "path": request.path,
            "query": self._safe_query(request),
            "params": self._param_names(request),
            "fields": self._fields_value(request),
            "served": None,
            "route": None,
            "status": None,
            "fault": None,
            "error_code": None,
            "appsecret_proof": None,
            "duration_ms": None,
        }
        with self._log_lock:
            self.request_log.append(entry)  # logged at arrival, so calls the client gave up on still count

        ctx: RequestContext | None = None
        usage_pct: float | None = None
        regain_minutes: float | None = None
        truncate = False
        try:
            ctx = RequestContext(self, request)
            token = self._check_token(ctx)
            entry["appsecret_proof"] = self._check_proof(ctx, token)
            pending = self._resolve(ctx)
            entry["route"] = ctx.route.name if ctx.route else None
            fault = self.faults.pick(ctx.method, request.path, entry["route"])
            if fault is not None:
                kind = fault["kind"]
                entry["fault"] = kind
                if kind in DELAY_KINDS:
                    self.stop_event.wait(float(fault.get("seconds", 5.0 if kind == "timeout" else 1.0)))
                elif kind in PAGE_KINDS:
                    ctx.page_fault = kind
                elif kind == "high_usage":
                    usage_pct = float(fault.get("pct", 90))
                elif kind == "malformed_json":
                    truncate = True
                else:
                    err = fault_error(fault)
                    if err is not None:
                        raise err
            if pending is not None:
                raise pending
            assert ctx.route is not None
            with self.world.lock:
                result = ctx.route.handler(ctx)
            if ctx.method == "GET" and isinstance(result, dict):
                entry["served"] = served_fields(result)
            response = result if isinstance(result, Response) else _json_response(result)
        except GraphError as err:
            entry["error_code"] = err.code
            usage_pct = err.usage_pct if err.usage_pct is not None else usage_pct
            regain_minutes = err.regain_minutes
            response = _json_response(err.body(_trace_id(self.world.seed, seq)), err.status, err.headers)
        except Exception:
            log.exception("sandbox handler failed on %s %s", request.method, request.path)
            err = gerr.unknown_error(1, 500)
            entry["error_code"] = err.code
            response = _json_response(err.body(_trace_id(self.world.seed, seq)), err.status)

        self._add_usage_headers(response, ctx, seq, usage_pct, regain_minutes)
        response.headers["x-fb-trace-id"] = _trace_id(self.world.seed, seq)
        if ctx is not None and ctx.version:
            response.headers["facebook-api-version"] = ctx.version
        if truncate:
            data = response.get_data()
            response.set_data(data[: max(1, len(data) // 2)])
            response.status_code = 200
        entry["status"] = response.status_code
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        if self.log_requests or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.INFO if self.log_requests else logging.DEBUG,
                "%s %s -> %s (%s%s) %.0f ms",
                request.method,
                request.path,
                response.status_code,
                entry["route"] or "-",
                f", fault {entry['fault']}" if entry["fault"] else "",
                entry["duration_ms"],
            )
        return response

    def _add_usage_headers(
        self,
        response: Response,
        ctx: RequestContext | None,
        seq: int,
        pct: float | None,
        regain_minutes: float | None,
    ) -> None:
        # Realistic low numbers normally; every header at `pct` for throttling and high-usage faults.
        def low(mod: int) -> int:
            return 1 + (seq * 7 + mod) % (3 + mod)

        app_usage = {"call_count": low(5), "total_cputime": low(1), "total_time": low(2)}
        if pct is not None:
            app_usage = dict.fromkeys(app_usage, round(pct))
        response.headers["X-App-Usage"] = json.dumps(app_usage)
        family = ctx.route.family if ctx is not None and ctx.route is not None else FAMILY_CATALOG
        business_id = ctx.business_id if ctx is not None else None
        if business_id is None and (pct is not None or regain_minutes):
            # Throttling on an object the sandbox does not know: still say when to come back.
            business_id = "0"
        if business_id is not None:
            entry = {
                "type": family,
                "call_count": app_usage["call_count"] if pct is not None else low(3),
                "total_cputime": app_usage["total_cputime"] if pct is not None else low(1),
                "total_time": app_usage["total_time"] if pct is not None else low(2),
                "estimated_time_to_regain_access": int(regain_minutes or 0),
            }
            response.headers["X-Business-Use-Case-Usage"] = json.dumps({business_id: [entry]})
        if family in (FAMILY_ADS, FAMILY_INSIGHTS):
            acc = round(pct) if pct is not None else low(4)
            response.headers["X-Ad-Account-Usage"] = json.dumps(
                {"acc_id_util_pct": acc, "reset_time_duration": 0, "ads_api_access_tier": "standard_access"}
            )
        if family == FAMILY_INSIGHTS:
            util = round(pct) if pct is not None else low(2)
            load = getattr(ctx, "insights_load", None) or {}  # report jobs in flight (routes_insights)
            response.headers["x-fb-ads-insights-throttle"] = json.dumps(
                {
                    "app_id_util_pct": max(util, load.get("app_id_util_pct", 0)),
                    "acc_id_util_pct": max(util, load.get("acc_id_util_pct", 0)),
                    "ads_api_access_tier": "standard_access",
                }
            )


# -- the server --------------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No werkzeug access log: its lines carry the query string; the app logs its own token-free line."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class SandboxServer:
    """Serve a ``World`` over HTTP on loopback in a background thread (``port=0`` picks a free port)."""

    def __init__(
        self,
        world: World,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app_secret: str | None = None,
        require_appsecret_proof: bool = False,
        router: Router | None = None,
        log_requests: bool = False,
    ) -> None:
        self.world = world
        self.host = host
        self.port = port
        self.app = SandboxApp(
            world,
            router,
            app_secret=app_secret,
            require_appsecret_proof=require_appsecret_proof,
            log_requests=log_requests,
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def admin(self) -> Any:
        from meta_sandbox.admin import SandboxAdmin

        return SandboxAdmin(self.url)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SandboxServer:
        if self.running:
            return self
        self.app.stop_event.clear()
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"meta-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server thread ends (the CLI waits here until Ctrl-C)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        self.app.stop_event.set()  # wakes handlers sleeping in slow/timeout faults
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "FAMILY_ADS",
    "FAMILY_CATALOG",
    "FAMILY_INSIGHTS",
    "MAX_PAGE_LIMIT",
    "SECRET_PARAMS",
    "Handler",
    "RequestContext",
    "Route",
    "Router",
    "SandboxApp",
    "SandboxServer",
    "decode_cursor",
    "default_router",
    "encode_cursor",
    "request_json_object",
    "served_fields",
]
