"""Admin API under ``/__sandbox`` (no token): reset, faults, clock, request log, state, config and
named snapshots of all of it (saved, restored exactly, deleted).

Handlers take ``(app, request, **url_args)`` and return JSON data or ``(data, status)``; ValueError and
TypeError become 400, KeyError 404.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox.faults import FaultSpecError
from meta_sandbox.server import request_json_object

if TYPE_CHECKING:
    from meta_sandbox.server import Router, SandboxApp


@dataclass(frozen=True)
class _Snapshot:
    """Everything a Graph or admin call can change, copied: restoring it is exact (id counters, request log
    and its sequence, fault rules and their random state, config, clock)."""

    world: dict[str, Any]
    fault_rules: list[Any]
    fault_next_id: int
    fault_seed: int
    request_log: list[dict[str, Any]]
    next_seq: int
    next_nonce: int
    config: tuple[str | None, bool]


# Named snapshots per app, kept outside the app object and dropped with it; they survive `reset`.
_SNAPSHOTS: weakref.WeakKeyDictionary[SandboxApp, dict[str, _Snapshot]] = weakref.WeakKeyDictionary()


def _counter_value(counter: itertools.count[int]) -> int:
    """The next value of an ``itertools.count`` without consuming it (its repr is ``count(n)``)."""
    match = re.fullmatch(r"count\((\d+)\)", repr(counter))
    if match is None:
        raise TypeError(f"unexpected counter {counter!r}")
    return int(match.group(1))


def _world_copy(world: Any) -> dict[str, Any]:
    # One deepcopy with a shared memo keeps references between collections; the registry (read-only) and the
    # lock are shared, not copied. The caller holds world.lock.
    memo: dict[int, Any] = {id(world.registry): world.registry, id(world.lock): world.lock}
    values = {f.name: getattr(world, f.name) for f in dataclasses.fields(world) if f.name != "lock"}
    return copy.deepcopy(values, memo)


def save_snapshot(app: SandboxApp, name: str) -> None:
    with app.world.lock, app.faults._lock, app._log_lock:
        snap = _Snapshot(
            world=_world_copy(app.world),
            fault_rules=copy.deepcopy(app.faults._rules),
            fault_next_id=app.faults._next_id,
            fault_seed=app.faults.seed,
            request_log=copy.deepcopy(list(app.request_log)),
            next_seq=_counter_value(app._seq),
            next_nonce=_counter_value(app.nonces),
            config=(app.app_secret, app.require_appsecret_proof),
        )
    _SNAPSHOTS.setdefault(app, {})[name] = snap


def restore_snapshot(app: SandboxApp, name: str) -> None:
    try:
        snap = _SNAPSHOTS.get(app, {})[name]
    except KeyError:
        raise KeyError(f"no sandbox snapshot {name!r}") from None
    world = copy.deepcopy(
        snap.world, {id(app.world.registry): app.world.registry, id(app.world.lock): app.world.lock}
    )
    with app.world.lock, app.faults._lock, app._log_lock:
        for key, value in world.items():
            setattr(app.world, key, value)  # in place: references to the world stay valid
        app.faults._rules = copy.deepcopy(snap.fault_rules)
        app.faults._next_id = snap.fault_next_id
        app.faults.seed = snap.fault_seed
        app.request_log.clear()
        app.request_log.extend(copy.deepcopy(snap.request_log))
        app._seq = itertools.count(snap.next_seq)
        app.nonces = itertools.count(snap.next_nonce)
        app.app_secret, app.require_appsecret_proof = snap.config


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

    @router.admin("/snapshots/<name>", name="admin.snapshots.save", methods=("POST",))
    def save(app: SandboxApp, request: Request, name: str) -> Any:
        save_snapshot(app, name)
        return {"ok": True, "name": name}

    @router.admin("/snapshots/<name>/restore", name="admin.snapshots.restore", methods=("POST",))
    def restore(app: SandboxApp, request: Request, name: str) -> Any:
        restore_snapshot(app, name)
        return {"ok": True, "name": name}

    @router.admin("/snapshots/<name>", name="admin.snapshots.delete", methods=("DELETE",))
    def delete(app: SandboxApp, request: Request, name: str) -> Any:
        if _SNAPSHOTS.get(app, {}).pop(name, None) is None:
            raise KeyError(f"no sandbox snapshot {name!r}")
        return {"ok": True}
