"""``SandboxAdmin``: a small requests wrapper around the sandbox's ``/__sandbox`` admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests


class SandboxAdminError(RuntimeError):
    """The admin API refused a call (bad fault spec, unknown state kind, ...)."""


class SandboxAdmin:
    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._session.request(
            method, f"{self.base_url}/__sandbox{path}", timeout=self.timeout, **kwargs
        )
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:200]}
        if resp.status_code >= 400:
            raise SandboxAdminError(
                f"sandbox admin {method} {path}: HTTP {resp.status_code}: {body.get('error')}"
            )
        return body

    # -- world ------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Rebuild the world (registry + seed), clear faults and the request log, restore the config."""
        return self._call("POST", "/reset", json={} if seed is None else {"seed": seed})

    def state(self, kind: str | None = None, obj_id: str | None = None) -> Any:
        """``state()`` summary; ``state("catalogs")`` a dict by id; ``state("catalogs", id)`` one object."""
        if kind is None:
            return self._call("GET", "/state")
        if obj_id is None:
            return self._call("GET", f"/state/{kind}")["data"]
        return self._call("GET", f"/state/{kind}/{obj_id}")

    # -- clock ------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", json={"advance_seconds": seconds})["now"])

    def freeze_clock(self, frozen: bool = True) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", json={"frozen": frozen})["now"])

    # -- faults -----------------------------------------------------------------------------------------

    def add_fault(
        self,
        kind: str,
        *,
        route: str | None = None,
        path_regex: str | None = None,
        method: str | None = None,
        rate: float | None = None,
        times: int | None = None,
        **params: Any,
    ) -> int:
        """Add one rule (see kobi_cpas.sandbox.faults for kinds and params); returns its id."""
        spec: dict[str, Any] = {"kind": kind, **params}
        for key, value in (
            ("route", route),
            ("path_regex", path_regex),
            ("method", method),
            ("rate", rate),
            ("times", times),
        ):
            if value is not None:
                spec[key] = value
        return self._call("POST", "/faults", json=spec)["ids"][0]

    def script_faults(
        self,
        script: list[dict[str, Any]],
        *,
        route: str | None = None,
        path_regex: str | None = None,
        method: str | None = None,
    ) -> int:
        """The next ``len(script)`` matching calls get these faults in order, then calls are normal."""
        spec: dict[str, Any] = {"script": script}
        for key, value in (("route", route), ("path_regex", path_regex), ("method", method)):
            if value is not None:
                spec[key] = value
        return self._call("POST", "/faults", json=spec)["ids"][0]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["data"]

    def remove_fault(self, rule_id: int) -> None:
        self._call("DELETE", f"/faults/{rule_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # -- request log ------------------------------------------------------------------------------------

    def requests(
        self,
        *,
        method: str | None = None,
        route: str | None = None,
        path_regex: str | None = None,
        since: int | None = None,
    ) -> list[dict[str, Any]]:
        """Received Graph calls: seq, at, method, path, query (no token), params (the names of every query,
        form, JSON-body and file parameter), fields (the whole ``fields`` value), route, status, fault, error_code,
        appsecret_proof ("valid"/"invalid"/"absent"/"unchecked"), duration_ms."""
        params = {k: v for k, v in (("method", method), ("route", route), ("path_regex", path_regex)) if v}
        if since is not None:
            params["since"] = str(since)
        return self._call("GET", "/requests", params=params)["data"]

    def count_requests(self, **filters: Any) -> int:
        return len(self.requests(**filters))

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    # -- catalog batches ---------------------------------------------------------------------------------

    def end_batch(self, handle: str, status: str, applied_share: float = 0.0) -> dict[str, Any]:
        """End a Batch API request with a terminal status other than finished (``canceled``, ``error``);
        ``applied_share`` of its requests are applied first."""
        return self._call(
            "POST", f"/batches/{handle}/status", json={"status": status, "applied_share": applied_share}
        )

    # -- config -----------------------------------------------------------------------------------------

    def configure(
        self, *, app_secret: str | None = None, require_appsecret_proof: bool | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if app_secret is not None:
            body["app_secret"] = app_secret
        if require_appsecret_proof is not None:
            body["require_appsecret_proof"] = require_appsecret_proof
        return self._call("POST", "/config", json=body)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SandboxAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
