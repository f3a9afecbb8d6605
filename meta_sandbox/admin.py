"""``SandboxAdmin``: the one client of the sandbox's ``/__sandbox`` admin API (tests, demos, benchmarks).

World, clock, faults, request log, catalog knobs and config are methods of ``SandboxAdmin``; the Collaborative
Ads knobs are ``admin.cpas`` (:class:`CpasAdmin`) and the Ads Insights knobs ``admin.insights``
(:class:`InsightsAdmin`), views that share the admin's HTTP session. Every documented operation has a public
method: callers never need ``_call``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
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

    def save_snapshot(self, name: str) -> None:
        """Keep a named copy of everything calls can change: world, faults, request log, config, clock."""
        self._call("POST", f"/snapshots/{name}")

    def restore_snapshot(self, name: str) -> None:
        """Make the sandbox exactly as it was at ``save_snapshot(name)``; the snapshot stays for later restores
        (and survives ``reset``)."""
        self._call("POST", f"/snapshots/{name}/restore")

    def delete_snapshot(self, name: str) -> None:
        self._call("DELETE", f"/snapshots/{name}")

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
        """Add one rule (see meta_sandbox.faults for kinds and params); returns its id."""
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

    # -- catalog knobs -----------------------------------------------------------------------------------

    def catalog_config(self, **settings: float) -> dict[str, Any]:
        """Read (no arguments) or change the catalog model's timing and problem knobs: ``upload_pending_polls``,
        ``upload_processing_seconds``, ``batch_processing_seconds``, ``problem_rate_scale``, ..."""
        if not settings:
            return self._call("GET", "/catalog_config")
        return self._call("POST", "/catalog_config", json=settings)

    def catalog_items(self, catalog_id: str) -> dict[str, dict[str, str]]:
        """The catalog's items as stored (retailer id -> fields), after applying work the clock made due."""
        return self._call("GET", f"/catalogs/{catalog_id}/items")

    def force_item_error(self, catalog_id: str, retailer_id: str, error_type: str) -> dict[str, Any]:
        """Report ``error_type`` on the item until suppressed or cleared; returns the item's error types."""
        body = {"catalog_id": catalog_id, "retailer_id": retailer_id, "error_type": error_type}
        return self._call("POST", "/item_errors", json=body)

    def suppress_item_error(self, catalog_id: str, retailer_id: str, error_type: str) -> dict[str, Any]:
        """Never report ``error_type`` on the item (even when generated) until cleared."""
        body = {"catalog_id": catalog_id, "retailer_id": retailer_id, "error_type": error_type}
        return self._call("DELETE", "/item_errors", json=body)

    def clear_item_errors(self, catalog_id: str, retailer_id: str) -> dict[str, Any]:
        """Drop the item's forced and suppressed error types: back to what the generator reports."""
        body = {"catalog_id": catalog_id, "retailer_id": retailer_id}
        return self._call("DELETE", "/item_errors", json=body)

    # -- areas ------------------------------------------------------------------------------------------

    @cached_property
    def cpas(self) -> CpasAdmin:
        """The Collaborative Ads knobs (``/__sandbox/cpas``)."""
        return CpasAdmin(self)

    @cached_property
    def insights(self) -> InsightsAdmin:
        """The Ads Insights knobs (``/__sandbox/insights``)."""
        return InsightsAdmin(self)

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


class CpasAdmin:
    """The Collaborative Ads knobs (retailer side: shares, compliance, partners, injected objects), over a
    ``SandboxAdmin``: ``SandboxAdmin(url).cpas``."""

    def __init__(self, admin: SandboxAdmin) -> None:
        self.admin = admin

    def _cpas(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.admin._call(method, f"/cpas{path}", json=dict(body or {}))

    def config(self, **settings: Any) -> dict[str, Any]:
        """Read (no arguments) or change ``auto_accept_shares`` / ``request_approval_seconds``."""
        return self._cpas("POST", "/config", settings) if settings else self._cpas("GET", "/config")

    def accept_share(self, segment_id: str, business_id: str) -> None:
        self._cpas("POST", f"/segments/{segment_id}/accept", {"business": business_id})

    def unshare(self, segment_id: str, business_id: str) -> None:
        self._cpas("POST", f"/segments/{segment_id}/unshare", {"business": business_id})

    def set_product_count(self, catalog_id: str, count: int | None) -> None:
        self._cpas("POST", f"/catalogs/{catalog_id}/product_count", {"count": count})

    def set_compliance(self, catalog_id: str, compliant: bool) -> None:
        self._cpas("POST", f"/catalogs/{catalog_id}/compliance", {"compliant": compliant})

    def load_items(self, catalog_id: str, items: list[Mapping[str, Any]], replace: bool = True) -> int:
        return self._cpas(
            "POST", f"/catalogs/{catalog_id}/items", {"items": list(items), "replace": replace}
        )["items"]

    def delete_catalog(self, catalog_id: str) -> None:
        self._cpas("DELETE", f"/catalogs/{catalog_id}")

    def delete_ad_account(self, account_id: str) -> None:
        self._cpas("DELETE", f"/ad_accounts/{account_id}")

    def dedicate_ad_account(self, account_id: str, business_id: str, partner_business_id: str | None) -> None:
        """The brand links its ad account (created if needed) to a retailer, as in Collaboration Center."""
        self._cpas(
            "POST",
            f"/ad_accounts/{account_id}/dedicate",
            {"business": business_id, "partner_business": partner_business_id},
        )

    def inject_campaign(self, account_id: str, segment_id: str, name: str | None = None, **extra: Any) -> str:
        body = {"segment_id": segment_id, "name": name, **extra}
        return self._cpas("POST", f"/ad_accounts/{account_id}/campaigns", body)["id"]

    def patch_ad(self, ad_id: str, **changes: Any) -> None:
        self._cpas("POST", f"/ads/{ad_id}/patch", changes)

    def set_product_set_live(self, set_id: str, live: bool | None) -> None:
        self._cpas("POST", f"/product_sets/{set_id}/live", {"live": live})

    def set_request_status(self, request_id: str, status: str | None) -> None:
        self._cpas("POST", f"/collaboration_requests/{request_id}/status", {"status": status})


class InsightsAdmin:
    """The Ads Insights knobs (drift, scripted report runs, config, benchmark ads, request log), over a
    ``SandboxAdmin``: ``SandboxAdmin(url).insights``."""

    def __init__(self, admin: SandboxAdmin) -> None:
        self.admin = admin

    def drift(self, account_id: str, **knobs: Any) -> dict[str, Any]:
        return self.admin._call("POST", "/insights/drift", json={"account_id": account_id, **knobs})

    def script_jobs(self, account_id: str, *outcomes: str | dict[str, Any]) -> dict[str, Any]:
        """The next report runs of the account end as scripted: "failed", "skipped", {"outcome": "slow", ...}."""
        return self.drift(account_id, jobs=list(outcomes))

    def clear_drift(self) -> None:
        self.admin._call("DELETE", "/insights/drift")

    def describe(self) -> dict[str, Any]:
        return self.admin._call("GET", "/insights/drift")

    def configure(self, **config: Any) -> dict[str, Any]:
        return self.admin._call("POST", "/insights/config", json=config)

    def seed_ads(self, account_id: str, n_ads: int, **kwargs: Any) -> dict[str, Any]:
        return self.admin._call(
            "POST", "/insights/ads", json={"account_id": account_id, "n_ads": n_ads, **kwargs}
        )

    def requests(self) -> list[dict[str, Any]]:
        """Every insights call with its parameters (POST bodies included)."""
        return self.admin._call("GET", "/insights/requests")["data"]

    def report_runs(self) -> list[dict[str, Any]]:
        return self.admin._call("GET", "/insights/report_runs")["data"]
