"""What a Graph handler works with: ``RequestContext`` (params, field selection, paging with Graph cursors)
and the served-shape summary the request log keeps."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request

from meta_sandbox import errors as gerr
from meta_sandbox.fields import FieldSpec, parse_fields, select_fields
from meta_sandbox.routing import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    Route,
)
from meta_sandbox.state import World

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp

SECRET_PARAMS = frozenset({"access_token", "appsecret_proof"})


# -- cursors -----------------------------------------------------------------------------------------


def encode_cursor(position: int, nonce: int = 0) -> str:
    raw = f"sbx:{position}:{nonce}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, position, _nonce = base64.urlsafe_b64decode(padded.encode()).decode().split(":")
        if tag != "sbx":
            raise ValueError(tag)
        return max(0, int(position))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise gerr.invalid_parameter(f"The cursor '{cursor}' is invalid") from None


# -- served shape ----------------------------------------------------------------------------------------

_SHAPE_SAMPLE = 200  # items of a list looked at: enough for every shape, cheap on 5,000-item pages


def _merge_shape(shape: dict[str, Any], value: Any) -> None:
    # A page ({"data": [...], "paging": ...}, also an edge read as a field) contributes its rows' fields.
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    rows = value[:_SHAPE_SAMPLE] if isinstance(value, list) else [value]
    for row in rows:
        if not isinstance(row, dict):
            continue
        if not all(isinstance(k, str) and k.isidentifier() for k in row):
            continue  # a free-form map (tracking_specs' "action.type" keys): its parent names it
        for key, sub in row.items():
            nested = shape.setdefault(key, {})
            if isinstance(sub, dict) or (isinstance(sub, list) and any(isinstance(v, dict) for v in sub)):
                _merge_shape(nested, sub)


def _shape_text(shape: dict[str, Any]) -> str:
    return ",".join(f"{k}{{{_shape_text(v)}}}" if v else k for k, v in sorted(shape.items()))


def served_fields(body: Any) -> str:
    """The fields a Graph answer carries, in ``fields`` syntax (``id,business{id,name}``): the request log
    keeps it so contract tests can check what the sandbox serves against Meta's definitions."""
    shape: dict[str, Any] = {}
    _merge_shape(shape, body)
    return _shape_text(shape)


# -- request context -----------------------------------------------------------------------------------


class RequestContext:
    """What a Graph handler gets: the request, the world, the resolved node, parsed params and helpers."""

    def __init__(self, app: SandboxApp, request: Request) -> None:
        self.app = app
        self.request = request
        self.world: World = app.world
        self.method = request.method.upper()
        self.version: str | None = None
        self.node_id: str | None = None
        self.kind: str | None = None
        self.node: Any = None
        self.edge: str | None = None
        self.route: Route | None = None
        self.business_id: str | None = None  # whose X-Business-Use-Case-Usage the call counts against
        self.page_fault: str | None = None
        self.json: Any = None
        params: dict[str, Any] = {k: v for k, v in request.args.items() if k not in SECRET_PARAMS}
        if request.method in ("POST", "DELETE"):
            if request.mimetype == "application/json":
                try:
                    self.json = json.loads(request.get_data(as_text=True) or "null")
                except ValueError:
                    raise gerr.invalid_parameter("The request body is not valid JSON") from None
                if isinstance(self.json, dict):
                    params.update({k: v for k, v in self.json.items() if k not in SECRET_PARAMS})
            else:
                params.update({k: v for k, v in request.form.items() if k not in SECRET_PARAMS})
        self.params = params
        self._fields: list[FieldSpec] | None = None
        self._fields_parsed = False

    @property
    def files(self) -> Any:
        return self.request.files

    @property
    def fields(self) -> list[FieldSpec] | None:
        if not self._fields_parsed:
            raw = self.params.get("fields")
            self._fields = parse_fields(raw if isinstance(raw, str) else None)
            self._fields_parsed = True
        return self._fields

    def now(self) -> Any:
        return self.world.now()

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def int_param(self, name: str, default: int) -> int:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise gerr.invalid_parameter(f"Param {name} must be an integer") from None

    def bool_param(self, name: str, default: bool) -> bool:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        if isinstance(raw, bool):
            return raw
        return str(raw).lower() in ("1", "true", "yes")

    def json_param(self, name: str, default: Any = None) -> Any:
        """A parameter Meta expects JSON-encoded (e.g. ``requests`` of items_batch)."""
        raw = self.params.get(name)
        if raw is None:
            return default
        if not isinstance(raw, str):
            return raw
        try:
            return json.loads(raw)
        except ValueError:
            raise gerr.invalid_parameter(f"Param {name} must be JSON-encoded") from None

    def select(
        self,
        available: Mapping[str, Any],
        node_type: str | None = None,
        defaults: Iterable[str] = ("id", "name"),
    ) -> dict[str, Any]:
        """Apply ``fields=`` to a node's available fields (see fields.select_fields)."""
        return select_fields(
            available,
            self.fields,
            node_type=node_type or self.world.type_name(self.kind or ""),
            defaults=defaults,
        )

    def _url(self, query: Mapping[str, Any]) -> str:
        base = self.request.host_url.rstrip("/") + self.request.path
        return f"{base}?{urlencode(list(query.items()))}" if query else base

    def current_url(self) -> str:
        """The URL just requested, minus token parameters, byte for byte otherwise."""
        raw = self.request.query_string.decode("latin-1")
        kept = [s for s in raw.split("&") if s and s.split("=", 1)[0] not in SECRET_PARAMS]
        base = self.request.host_url.rstrip("/") + self.request.path
        return f"{base}?{'&'.join(kept)}" if kept else base

    def paginate(
        self, items: list[Any], *, default_limit: int = DEFAULT_PAGE_LIMIT, max_limit: int = MAX_PAGE_LIMIT
    ) -> dict[str, Any]:
        """A Meta cursor page of ``items`` honouring ``limit``/``after``/``before``; ``next`` never has a token."""
        limit = self.int_param("limit", default_limit)
        if limit <= 0:
            raise gerr.invalid_parameter("Param limit must be a positive integer")
        limit = min(limit, max_limit)
        n = len(items)
        after, before = self.params.get("after"), self.params.get("before")
        if after:
            start = min(decode_cursor(str(after)), n)
        elif before:
            start = max(0, min(decode_cursor(str(before)), n) - limit)
        else:
            start = 0
        base_query = {
            k: v
            for k, v in self.request.args.items()
            if k not in SECRET_PARAMS and k not in ("after", "before")
        }
        base_query["limit"] = str(limit)
        if self.page_fault == "empty_page":
            # Meta sometimes answers an empty page that still links on: the link resumes where we are.
            nonce = next(self.app.nonces)
            cursor = encode_cursor(start, nonce)
            return {
                "data": [],
                "paging": {
                    "cursors": {"before": cursor, "after": cursor},
                    "next": self._url({**base_query, "after": cursor}),
                },
            }
        page = items[start : start + limit]
        end = start + len(page)
        if n == 0:
            return {"data": []}
        paging: dict[str, Any] = {"cursors": {"before": encode_cursor(start), "after": encode_cursor(end)}}
        if start > 0:
            paging["previous"] = self._url({**base_query, "before": encode_cursor(start)})
        if end < n:
            paging["next"] = self._url({**base_query, "after": encode_cursor(end)})
        if self.page_fault == "paging_loop":
            paging["next"] = self.current_url()
        return {"data": page, "paging": paging}


def request_json_object(request: Request) -> dict[str, Any]:
    """The JSON object body of an admin request ({} when empty); ValueError for anything but an object."""
    if not request.get_data():
        return {}
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data
