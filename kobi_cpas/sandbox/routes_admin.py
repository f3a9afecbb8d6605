"""Admin API under ``/__sandbox`` (no token): reset, faults, clock, request log, state and config.

Handlers take ``(app, request, **url_args)`` and return JSON data or ``(data, status)``; ValueError and
TypeError become 400, KeyError 404.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from kobi_cpas.sandbox.faults import FaultSpecError
from kobi_cpas.sandbox.server import request_json_object

if TYPE_CHECKING:
    from kobi_cpas.sandbox.server import Router, SandboxApp


def register(router: Router) -> None:
    @router.admin("/health", name="admin.health")
    def health(app: SandboxApp, request: Request) -> Any:
        return {"ok": True, "seed": app.world.seed, "now": app.world.now().isoformat()}

    @router.admin("/reset", name="admin.reset", methods=("POST",))
    def reset(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        seed = body.get("seed")
        app.reset(int(seed) if seed is not None else None)
        return {"ok": True, "seed": app.world.seed}

    @router.admin("/faults", name="admin.faults.add", methods=("POST",))
    def add_faults(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        specs = body.get("faults", [body])
        try:
            rules = [app.faults.add(spec) for spec in specs]
        except FaultSpecError as exc:
            raise ValueError(str(exc)) from None
        return {"ok": True, "ids": [r.id for r in rules]}

    @router.admin("/faults", name="admin.faults.list", methods=("GET",))
    def list_faults(app: SandboxApp, request: Request) -> Any:
        return {"data": app.faults.describe()}

    @router.admin("/faults", name="admin.faults.clear", methods=("DELETE",))
    def clear_faults(app: SandboxApp, request: Request) -> Any:
        app.faults.clear()
        return {"ok": True}

    @router.admin("/faults/<int:rule_id>", name="admin.faults.remove", methods=("DELETE",))
    def remove_fault(app: SandboxApp, request: Request, rule_id: int) -> Any:
        if not app.faults.remove(rule_id):
            raise KeyError(f"no fault rule {rule_id}")
        return {"ok": True}

    @router.admin("/clock", name="admin.clock.get", methods=("GET",))
    def get_clock(app: SandboxApp, request: Request) -> Any:
        return {"now": app.world.now().isoformat(), "frozen": app.world.clock.frozen}

    @router.admin("/clock", name="admin.clock.set", methods=("POST",))
    def set_clock(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            if "frozen" in body:
                app.world.clock.freeze(bool(body["frozen"]))
            if "advance_seconds" in body:
                seconds = float(body["advance_seconds"])
                if seconds < 0:
                    raise ValueError("advance_seconds must be >= 0: the world clock never goes back")
                app.world.clock.advance(seconds)
        return {"now": app.world.now().isoformat(), "frozen": app.world.clock.frozen}

    @router.admin("/requests", name="admin.requests.list", methods=("GET",))
    def list_requests(app: SandboxApp, request: Request) -> Any:
        entries = app.logged_requests()
        method = request.args.get("method")
        route = request.args.get("route")
        path_regex = request.args.get("path_regex")
        since = request.args.get("since", type=int)
        if method:
            entries = [e for e in entries if e["method"] == method.upper()]
        if route:
            entries = [e for e in entries if e["route"] == route]
        if path_regex:
            try:
                rx = re.compile(path_regex)
            except re.error as exc:
                raise ValueError(f"bad path_regex: {exc}") from None
            entries = [e for e in entries if rx.search(e["path"])]
        if since is not None:
            entries = [e for e in entries if e["seq"] > since]
        return {"data": entries}

    @router.admin("/requests", name="admin.requests.clear", methods=("DELETE",))
    def clear_requests(app: SandboxApp, request: Request) -> Any:
        app.clear_request_log()
        return {"ok": True}

    @router.admin("/state", name="admin.state")
    def state(app: SandboxApp, request: Request) -> Any:
        return app.world.snapshot()

    @router.admin("/state/<kind>", name="admin.state.kind")
    def state_kind(app: SandboxApp, request: Request, kind: str) -> Any:
        try:
            return {"data": app.world.snapshot(kind)}
        except KeyError:
            raise KeyError(f"no state collection {kind!r}") from None

    @router.admin("/state/<kind>/<obj_id>", name="admin.state.object")
    def state_object(app: SandboxApp, request: Request, kind: str, obj_id: str) -> Any:
        try:
            return app.world.snapshot(kind, obj_id)
        except KeyError:
            raise KeyError(f"no {kind} object {obj_id!r}") from None

    @router.admin("/config", name="admin.config.get", methods=("GET",))
    def get_config(app: SandboxApp, request: Request) -> Any:
        return {
            "app_secret_set": bool(app.app_secret),
            "require_appsecret_proof": app.require_appsecret_proof,
        }

    @router.admin("/config", name="admin.config.set", methods=("POST",))
    def set_config(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        if "app_secret" in body:
            app.app_secret = body["app_secret"] or None
        if "require_appsecret_proof" in body:
            app.require_appsecret_proof = bool(body["require_appsecret_proof"])
        return {
            "app_secret_set": bool(app.app_secret),
            "require_appsecret_proof": app.require_appsecret_proof,
        }
