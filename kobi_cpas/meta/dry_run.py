"""Dry runs: a Graph client that reads from Meta as usual but never sends a write.

Every POST and DELETE is recorded (a ``DryRunWrite`` with a payload summary that names parameters, counts items
and describes upload files, never the token or a parameter value that could hold a credential) and answered
with a clearly synthetic response: new objects get ids prefixed ``dryrun-``. GETs go to Meta, except those on
a ``dryrun-`` id, which Meta has never seen: they are answered here as finished (an upload session ended
without errors, a batch handle finished, a report run completed, an edge with no rows).

The run tag ``kobi/dry_run=true`` selects this client (``kobi_cpas/resources.py``); the warehouse of a dry run
works on a scratch copy (``kobi_cpas/warehouse/scratch.py``), so these synthetic answers never reach Kobi's own
state.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import duckdb

from kobi_cpas.meta.client import MetaGraphClient, encode_params
from kobi_cpas.meta.redact import redact

DRY_RUN_TAG = "kobi/dry_run"
# Runs with the same value share one scratch copy of the work database, so a later run of a dry-run session
# (the CLI runs the pipeline as several runs) sees what the earlier ones would have done.
DRY_RUN_SCRATCH_TAG = "kobi/dry_run_scratch"
DRY_RUN_PREFIX = "dryrun-"

# Scalar parameters whose values are shown in the summary (names, statuses, switches); every other value is
# reduced to its name, since free-form values (contact details, URLs with credentials) must not be stored.
SAFE_VALUE_PARAMS = frozenset(
    {
        "name",
        "status",
        "objective",
        "item_type",
        "allow_upsert",
        "update_only",
        "billing_event",
        "optimization_goal",
        "bid_strategy",
        "daily_budget",
        "lifetime_budget",
        "is_adset_budget_sharing_enabled",
        "special_ad_categories",
        "permitted_tasks",
        "business",
        "receiver_business",
        "campaign_id",
        "adset_id",
        "product_set_id",
        "level",
        "time_increment",
        "allow_live_product_set_deletion",
    }
)
_SECRET_WORDS = ("token", "secret", "password", "passwd", "proof", "credential", "auth")
SAMPLE_IDS = 5
_MAX_VALUE_CHARS = 120

# Object kinds named after the edge a POST creates them on (the synthetic id says what it stands for).
_KINDS = {
    "uploads": "upload",
    "product_feeds": "feed",
    "items_batch": "batch",
    "product_sets": "product_set",
    "campaigns": "campaign",
    "adsets": "adset",
    "adcreatives": "creative",
    "ads": "ad",
    "owned_product_catalogs": "segment",
    "agencies": "share",
    "collaborative_ads_collaboration_requests": "collab_request",
    "insights": "report",
}


def is_dry_run(tags: Mapping[str, str] | None) -> bool:
    return str((tags or {}).get(DRY_RUN_TAG, "")).strip().lower() == "true"


def is_dry_run_id(value: object) -> bool:
    return isinstance(value, str) and value.startswith(DRY_RUN_PREFIX)


@dataclass(frozen=True)
class DryRunWrite:
    """One write a dry run did not send."""

    write_id: str
    method: str
    path: str  # the Graph path relative to the API version, without query string
    summary: dict[str, Any]
    synthetic_id: str | None
    recorded_at: datetime

    def summary_json(self) -> str:
        return json.dumps(
            self.summary, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )

    def describe(self) -> str:
        return f"{self.method} {self.path} {self.summary_json()}"


class DryRunLedger:
    """Writes recorded in this process and not yet stored (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Any] = []

    def add(self, row: Any) -> None:
        with self._lock:
            self._pending.append(row)

    def drain(self) -> list[Any]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


# -- payload summaries ---------------------------------------------------------------------------------------


def graph_path(path: str, api_version: str | None = None) -> str:
    """The Graph path without scheme, host, API version or query string."""
    p = str(path)
    if p.startswith(("http://", "https://")):
        p = urlsplit(p).path
    p = p.split("?", 1)[0].strip("/")
    head, _, rest = p.partition("/")
    if rest and (head == api_version or (head.startswith("v") and head[1:].replace(".", "").isdigit())):
        p = rest
    return p


def _is_secret_name(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in _SECRET_WORDS)


def _safe_value(name: str, value: Any) -> Any | None:
    if name not in SAFE_VALUE_PARAMS or _is_secret_name(name):
        return None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value) and len(value) <= 10:
        return [str(v)[:_MAX_VALUE_CHARS] for v in value]
    if isinstance(value, str):
        return value[:_MAX_VALUE_CHARS]
    return None


def _batch_summary(raw: Any) -> dict[str, Any]:
    """items_batch ``requests``: how many, which methods, which fields, the first retailer ids."""
    try:
        reqs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {"requests_unreadable": True}
    if not isinstance(reqs, list):
        return {"requests_unreadable": True}
    methods: dict[str, int] = {}
    fields: set[str] = set()
    ids: list[str] = []
    for r in reqs:
        if not isinstance(r, dict):
            continue
        m = str(r.get("method") or "?")
        methods[m] = methods.get(m, 0) + 1
        data = r.get("data") if isinstance(r.get("data"), dict) else {}
        fields.update(str(k) for k in data)
        rid = data.get("id") or data.get("retailer_id") or r.get("retailer_id")
        if rid is not None and len(ids) < SAMPLE_IDS:
            ids.append(str(rid))
    return {
        "item_count": len(reqs),
        "request_methods": methods,
        "item_fields": sorted(fields),
        "first_retailer_ids": ids,
    }


def _file_bytes(spec: Any) -> tuple[str | None, bytes | None]:
    """(file name, content) of a requests ``files`` entry: bytes, a file object or a (name, content, ...) tuple."""
    name, content = None, spec
    if isinstance(spec, tuple):
        name = str(spec[0]) if spec and spec[0] is not None else None
        content = spec[1] if len(spec) > 1 else None
    if hasattr(content, "read"):
        pos = content.tell() if hasattr(content, "tell") else None
        data = content.read()
        if pos is not None and hasattr(content, "seek"):
            content.seek(pos)
        content = data
    if isinstance(content, str):
        content = content.encode()
    return name, content if isinstance(content, bytes) else None


def _csv_summary(content: bytes) -> dict[str, Any]:
    """Row count and first retailer ids of an upload file, read by DuckDB (files can hold millions of rows)."""
    con = duckdb.connect()
    try:
        rel = con.read_csv(io.BytesIO(content), header=True, all_varchar=True)
        out: dict[str, Any] = {"row_count": int(rel.aggregate("count(*)").fetchall()[0][0])}
        cols = [c.lower() for c in rel.columns]
        key = next((rel.columns[cols.index(k)] for k in ("id", "retailer_id") if k in cols), None)
        if key is not None:
            out["first_retailer_ids"] = [
                r[0] for r in rel.limit(SAMPLE_IDS).project(f'"{key}"').fetchall() if r[0] is not None
            ]
        out["columns"] = len(rel.columns)
        return out
    except duckdb.Error as exc:
        return {"row_count": None, "unreadable": type(exc).__name__}
    finally:
        con.close()


def summarize_write(
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    json_body: Any = None,
    files: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a write would have sent, without the token or any value that could hold a credential."""
    summary: dict[str, Any] = {"method": method.upper()}
    values: dict[str, Any] = {}
    for label, src in (("query_params", params), ("form_params", data)):
        if not src:
            continue
        names = sorted(str(k) for k, v in src.items() if v is not None)
        summary[label] = names
        for k in names:
            v = _safe_value(k, src[k])
            if v is not None:
                values[k] = v
    if isinstance(json_body, Mapping):
        summary["json_params"] = sorted(str(k) for k in json_body)
        for k in summary["json_params"]:
            v = _safe_value(k, json_body[k])
            if v is not None:
                values[k] = v
    elif json_body is not None:
        summary["json_body"] = type(json_body).__name__
    if values:
        summary["values"] = values
    if data and "requests" in data:
        summary.update(_batch_summary(data["requests"]))
    if files:
        described = []
        for param, spec in files.items():
            name, content = _file_bytes(spec)
            item: dict[str, Any] = {"param": str(param), "file_name": name}
            if content is not None:
                item["size_bytes"] = len(content)
                item.update(_csv_summary(content))
            described.append(item)
        summary["files"] = described
        rows = [f.get("row_count") for f in described if isinstance(f.get("row_count"), int)]
        if rows:
            summary["item_count"] = sum(rows)
            summary.setdefault("first_retailer_ids", described[0].get("first_retailer_ids", []))
    return summary


def scrub_summary(summary: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """The summary with every secret (and anything token-shaped) replaced, as a last line of defence."""
    text = json.dumps(summary, ensure_ascii=False, default=str)
    clean = redact(text, secrets)
    return summary if clean == text else json.loads(clean)


# -- synthetic answers ---------------------------------------------------------------------------------------


def new_dry_run_id(kind: str) -> str:
    return f"{DRY_RUN_PREFIX}{kind}-{uuid.uuid4().hex[:12]}"


def _kind_of(node_id: str) -> str:
    return node_id[len(DRY_RUN_PREFIX) :].rsplit("-", 1)[0]


def _finished_node(node_id: str, rows: int | None, now: datetime) -> dict[str, Any]:
    """A dry-run object read back: finished, nothing rejected, nothing deleted."""
    node: dict[str, Any] = {"id": node_id, "dry_run": True}
    kind = _kind_of(node_id)
    if kind == "upload":
        n = int(rows or 0)
        stamp = now.isoformat(timespec="seconds")
        node.update(
            start_time=stamp,
            end_time=stamp,
            num_detected_items=n,
            num_persisted_items=n,
            num_invalid_items=0,
            num_deleted_items=0,
            error_count=0,
            warning_count=0,
        )
    elif kind == "report":
        node.update(async_status="Job Completed", async_percent_completion=100)
    return node


def _batch_status(handles: list[str]) -> dict[str, Any]:
    return {
        "data": [
            {
                "handle": h,
                "status": "finished",
                "errors": [],
                "warnings": [],
                "errors_total_count": 0,
                "warnings_total_count": 0,
                "ids_of_invalid_requests": [],
                "dry_run": True,
            }
            for h in handles
        ]
    }


@dataclass
class _Shared:
    """State shared by a client and its copies (``post_once`` copies the client)."""

    rows: dict[str, int] = field(default_factory=dict)
    writes: list[DryRunWrite] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DryRunMetaClient(MetaGraphClient):
    """A ``MetaGraphClient`` that sends GETs and records every other request instead of sending it.

    ``recorder`` receives each ``DryRunWrite`` (the resource stores it in ``meta_dry_run_writes``); each is also
    logged on the client's logger (the Dagster run log).
    """

    def __init__(
        self,
        *args: Any,
        recorder: Callable[[DryRunWrite], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder
        self._clock = clock
        self._shared = _Shared()

    @property
    def writes(self) -> list[DryRunWrite]:
        """Every write this client (and its copies) recorded, in order."""
        return list(self._shared.writes)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        m = method.upper()
        if m != "GET":
            return self._intercept(m, path, params=params, data=data, json_body=json_body, files=files)
        synthetic = self._synthetic_get(path, params)
        if synthetic is not None:
            return synthetic
        return super().request(m, path, params=params)

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        synthetic = self._synthetic_get(path, params)
        if synthetic is not None:
            yield synthetic if "data" in synthetic else {"data": []}
            return
        yield from super().pages(path, params)

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        # Last line of defence: whatever path a write takes, it never reaches the network in a dry run.
        if method.upper() != "GET":
            raise RuntimeError(
                f"dry run: refusing to send {method} {graph_path(url, self.api_version)} to Meta"
            )
        return super()._call(method, url, **kwargs)

    # -- writes -------------------------------------------------------------------------------------------

    def _intercept(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        json_body: Any,
        files: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        gpath = redact(graph_path(path, self.api_version), self._secrets)
        segments = gpath.split("/")
        edge = segments[-1] if len(segments) > 1 else None
        summary = summarize_write(
            method,
            gpath,
            params=encode_params(params) if params else None,
            data=data,
            json_body=json_body,
            files=files,
        )
        summary = scrub_summary(summary, self._secrets)
        answer: dict[str, Any] = {"success": True, "dry_run": True}
        synthetic_id: str | None = None
        if method == "POST" and edge is not None:
            synthetic_id = new_dry_run_id(_KINDS.get(edge, edge.rstrip("s") or "object"))
            answer["id"] = synthetic_id
            if edge == "items_batch":
                answer.update(handles=[synthetic_id], validation_status=[])
            elif edge == "insights":
                answer["report_run_id"] = synthetic_id
        write = DryRunWrite(
            write_id=uuid.uuid4().hex,
            method=method,
            path=gpath,
            summary=summary,
            synthetic_id=synthetic_id,
            recorded_at=self._clock(),
        )
        with self._shared.lock:
            self._shared.writes.append(write)
            if synthetic_id and isinstance(summary.get("item_count"), int):
                self._shared.rows[synthetic_id] = summary["item_count"]
        self.logger.info(
            "DRY RUN: not sent to Meta: %s%s",
            write.describe()[:2000],
            f" (answered with {synthetic_id})" if synthetic_id else "",
        )
        if self._recorder is not None:
            self._recorder(write)
        return answer

    # -- reads of dry-run objects -------------------------------------------------------------------------

    def _synthetic_get(self, path: str, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The answer to a GET that names a dry-run object, or None when Meta should be asked."""
        gpath = graph_path(path, self.api_version)
        segments = gpath.split("/")
        dry_values = [str(v) for v in (params or {}).values() if is_dry_run_id(v)]
        if segments[-1] == "check_batch_request_status" and dry_values:
            return _batch_status(dry_values)
        if is_dry_run_id(segments[0]):
            if len(segments) == 1:
                with self._shared.lock:
                    rows = self._shared.rows.get(segments[0])
                return _finished_node(segments[0], rows, self._clock())
            return {"data": []}
        if any(is_dry_run_id(s) for s in segments) or dry_values:
            return {"data": []}
        return None
