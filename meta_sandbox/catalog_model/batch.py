"""The Batch API (``items_batch``): synchronous checks of a call, its status, and applying it when it finishes.

``line`` is the 0-based index of the request in ``requests``, as at Meta."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kobi_cpas.feeds.fields import canonical_column
from meta_sandbox.catalog_model.issues import validate_fields
from meta_sandbox.catalog_model.items import clean_value, delete_item, upsert_item
from meta_sandbox.state import Catalog, ItemsBatch, World

MAX_BATCH_REQUESTS = 5000
BATCH_METHODS = ("CREATE", "UPDATE", "DELETE")


class BatchRejected(ValueError):
    """The whole items_batch call is rejected (Meta error 100)."""


def new_handle(world: World) -> str:
    digest = hashlib.sha256(f"{world.seed}:handle:{world.new_id()}".encode()).digest()
    return (
        "Ac" + base64.urlsafe_b64encode(digest).decode().rstrip("=").replace("-", "x").replace("_", "y")[:30]
    )


def _request_id(req: Mapping[str, Any]) -> str:
    data = req.get("data")
    return clean_value(data.get("id")) if isinstance(data, Mapping) else ""


def _batch_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """The known product fields of a request's ``data`` (feed names; unknown keys are ignored, as in feeds)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = canonical_column(str(key))
        if name is not None:
            out[name] = clean_value(value)
    return out


def create_batch(
    world: World, catalog: Catalog, requests: Any, *, allow_upsert: bool
) -> tuple[ItemsBatch, list[dict[str, Any]]]:
    """Check an items_batch call; returns the batch (to be applied when it finishes) and the synchronous
    ``validation_status``. Raises BatchRejected when Meta would reject the whole call."""
    if not isinstance(requests, list):
        raise BatchRejected("Param requests must be a JSON-encoded array of requests")
    if not requests:
        raise BatchRejected("Param requests must be a non-empty array")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise BatchRejected(
            f"Param requests must be an array of at most {MAX_BATCH_REQUESTS} requests; got {len(requests)}. "
            "Split the requests into several calls."
        )
    seen: dict[str, int] = {}
    for line, req in enumerate(requests):
        if not isinstance(req, Mapping) or not isinstance(req.get("data"), Mapping):
            raise BatchRejected(
                f'Request {line} must be an object with "method" and "data" (an object with the item fields)'
            )
        rid = _request_id(req)
        if rid:
            if rid in seen:
                raise BatchRejected(
                    f"Duplicate retailer id '{rid}' in requests {seen[rid]} and {line}: every update of an "
                    "item must be combined into a single request of the batch"
                )
            seen[rid] = line

    sync_errors: list[dict[str, Any]] = []
    status: list[dict[str, Any]] = []
    for line, req in enumerate(requests):
        rid = _request_id(req)
        method = str(req.get("method") or "").upper()
        messages: list[str] = []
        if method not in BATCH_METHODS:
            messages.append(
                f"Invalid method: '{req.get('method')}'. The method must be one of CREATE, UPDATE, DELETE."
            )
        if not rid:
            messages.append(
                "A required field is missing: Every request needs the retailer id of the item in data.id."
            )
        if method in ("CREATE", "UPDATE"):
            fields = _batch_fields(req["data"])
            messages += [
                i.message
                for i in validate_fields(fields, full=False)
                if i.fatal and i.error_type != "MISSING_REQUIRED_FIELD"
            ]
        if messages:
            sync_errors += [{"line": line, "id": rid or None, "message": m} for m in messages]
            status.append(
                {"retailer_id": rid or None, "errors": [{"message": m} for m in messages], "warnings": []}
            )
    batch = ItemsBatch(
        handle=new_handle(world),
        catalog_id=catalog.id,
        created_time=world.now(),
        allow_upsert=allow_upsert,
        requests=[dict(r) for r in requests],
        processing_seconds=float(world.catalog_config.batch_processing_seconds),
        sync_errors=sync_errors,
    )
    world.items_batches[batch.handle] = batch
    return batch, status


def batch_status(world: World, batch: ItemsBatch) -> str:
    if batch.outcome:
        return batch.outcome
    elapsed = (world.now() - batch.created_time).total_seconds()
    if batch.applied or elapsed >= batch.processing_seconds:
        return "finished"
    return "dispatched" if elapsed >= batch.processing_seconds / 2 else "started"


def not_found_message(retailer_id: str) -> str:
    return f"Product item with retailer id {retailer_id} does not exist"


def apply_batch(world: World, batch: ItemsBatch, at: datetime) -> None:
    catalog = world.catalogs[batch.catalog_id]
    rejected_lines = {e["line"] for e in batch.sync_errors}
    errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for line, req in enumerate(batch.requests):
        if line in rejected_lines:
            continue
        rid = _request_id(req)
        method = str(req.get("method")).upper()
        if method == "DELETE":
            if not delete_item(world, catalog, rid):
                errors.append({"line": line, "id": rid, "message": not_found_message(rid)})
            continue
        fields = _batch_fields(req["data"])
        exists = rid in catalog.items
        if method == "UPDATE" and not exists and not batch.allow_upsert:
            errors.append({"line": line, "id": rid, "message": not_found_message(rid)})
            continue
        if exists:
            issues = validate_fields(fields, full=False)
        else:
            issues = validate_fields({**fields, "id": rid}, full=True)
        fatal = [i for i in issues if i.fatal]
        if fatal:
            errors += [{"line": line, "id": rid, "message": i.message} for i in fatal]
            continue
        warnings += [{"line": line, "id": rid, "message": i.message} for i in issues if not i.fatal]
        upsert_item(world, catalog, rid, fields, replace=False, at=at)
    batch.errors = list(batch.sync_errors) + errors
    batch.warnings = warnings
    batch.invalid_ids = list(dict.fromkeys(str(e["id"]) for e in batch.errors if e.get("id")))
    batch.applied = True
    batch.requests = []  # applied: drop the payload


def end_batch(world: World, batch: ItemsBatch, status: str, applied_share: float = 0.0) -> None:
    """End a batch that has not finished with a terminal ``status`` other than finished, as Meta does with
    ``canceled`` (manually) or ``error`` ("some of the requests might not have finished successfully"): the
    first ``applied_share`` of its requests are applied, the rest never are."""
    if batch.applied:
        raise ValueError(f"batch {batch.handle} has already finished")
    status = status.strip().lower()
    if not status or status == "finished":
        raise ValueError("status must be a terminal status other than finished, e.g. canceled or error")
    if not 0.0 <= applied_share <= 1.0:
        raise ValueError("applied_share must be between 0 and 1")
    batch.requests = batch.requests[: int(len(batch.requests) * applied_share)]
    apply_batch(world, batch, world.now())
    batch.outcome = status
