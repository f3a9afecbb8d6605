"""Batch API routes: ``POST /{catalog_id}/items_batch`` and ``GET /{catalog_id}/check_batch_request_status``.

A batch is checked synchronously (whole-call rejections are error 100; field format problems come back in
``validation_status`` and are not applied) and applied when it finishes, ``batch_processing_seconds`` of
world clock after the call (status ``started``, then ``dispatched`` from half-way, then ``finished``).
Admin ``POST /__sandbox/batches/<handle>/status`` ends a batch with another terminal status (``canceled``,
``error``), as Meta may; an unknown handle answers error 100, as Meta does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox import catalog_model as cm
from meta_sandbox import errors as gerr
from meta_sandbox.routes_feeds import require_item_catalog
from meta_sandbox.server import FAMILY_CATALOG, RequestContext, Router, request_json_object
from meta_sandbox.state import Catalog

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp

ITEM_TYPES = ("PRODUCT_ITEM",)


def _requests_param(ctx: RequestContext) -> Any:
    raw = ctx.params.get("requests")
    if raw is None:
        # Form-encoded lists (requests[0]=..., requests[1]=...) as some SDKs send them.
        indexed = sorted(
            (int(k[9:-1]), v)
            for k, v in ctx.params.items()
            if k.startswith("requests[") and k.endswith("]") and k[9:-1].isdigit()
        )
        if not indexed:
            raise gerr.invalid_parameter("The parameter requests is required")
        return [_json_value(v) for _i, v in indexed]
    return ctx.json_param("requests")


def _json_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise gerr.invalid_parameter("Param requests must be JSON-encoded") from None


def register(router: Router) -> None:
    @router.edge(
        "catalog", "items_batch", name="catalog.items_batch", methods=("POST",), family=FAMILY_CATALOG
    )
    def items_batch(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        require_item_catalog(catalog)
        cm.settle(ctx.world)
        item_type = ctx.param("item_type")
        if not item_type:
            raise gerr.invalid_parameter("The parameter item_type is required")
        if item_type not in ITEM_TYPES:
            raise gerr.invalid_parameter(f"Param item_type must be one of {{{', '.join(ITEM_TYPES)}}}")
        allow_upsert = ctx.bool_param("allow_upsert", True)
        requests = _requests_param(ctx)
        try:
            batch, validation = cm.create_batch(ctx.world, catalog, requests, allow_upsert=allow_upsert)
        except cm.BatchRejected as exc:
            raise gerr.invalid_parameter(str(exc)) from None
        return {"handles": [batch.handle], "validation_status": validation}

    @router.edge(
        "catalog",
        "check_batch_request_status",
        name="catalog.check_batch_request_status",
        family=FAMILY_CATALOG,
    )
    def check_status(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        cm.settle(ctx.world)
        handle = str(ctx.param("handle") or "").strip()
        if not handle:
            raise gerr.invalid_parameter("The parameter handle is required")
        batch = ctx.world.items_batches.get(handle)
        if batch is None or batch.catalog_id != catalog.id:
            raise gerr.invalid_parameter(
                f"Param handle: no batch request with handle {handle} in this catalog"
            )
        priority = ctx.param("error_priority")
        if priority is not None and priority not in cm.PRIORITIES:
            raise gerr.invalid_parameter("Param error_priority must be one of {HIGH, MEDIUM, LOW}")
        status = cm.batch_status(ctx.world, batch)
        finished = status == "finished" and batch.applied
        # Every batch error is fatal (HIGH); warnings are always listed, as in Meta's sample.
        errors = batch.errors if finished and priority in (None, "HIGH") else []
        warnings = batch.warnings if finished else []
        load_ids = ctx.bool_param("load_ids_of_invalid_requests", False)
        entry = {
            "handle": batch.handle,
            "status": status,
            "errors_total_count": len(errors),
            "errors": [dict(e) for e in errors],
            "warnings_total_count": len(warnings),
            "warnings": [dict(w) for w in warnings],
            "ids_of_invalid_requests": list(batch.invalid_ids) if finished and load_ids else [],
        }
        return {"data": [entry]}

    @router.admin("/batches/<handle>/status", name="admin.batch_status.set", methods=("POST",))
    def set_batch_status(app: SandboxApp, request: Request, handle: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            cm.settle(app.world)
            batch = app.world.items_batches.get(handle)
            if batch is None:
                raise KeyError(f"no batch request with handle {handle!r}")
            cm.end_batch(
                app.world, batch, str(body.get("status") or ""), float(body.get("applied_share", 0.0))
            )
            return {"handle": handle, "status": batch.outcome}
