"""Product feed routes: ``/{catalog_id}/product_feeds``, ``/{feed_id}``, ``/{feed_id}/uploads``,
``/{upload_id}`` and ``/{upload_id}/errors``; admin ``/__sandbox/catalog_config`` and
``/__sandbox/catalogs/<catalog_id>/items``.

Upload processing, validation and the apply rules live in ``catalog_model``.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox import catalog_model as cm
from meta_sandbox import errors as gerr
from meta_sandbox.server import FAMILY_CATALOG, RequestContext, Router, request_json_object
from meta_sandbox.state import Catalog, CatalogConfig, FeedUpload, ProductFeed, World

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp

FEED_TYPE = "ProductFeed"
UPLOAD_TYPE = "ProductFeedUpload"
UPLOAD_ERROR_TYPE = "ProductFeedUploadError"
UPLOAD_DEFAULTS = ("id", "start_time", "end_time")
ERROR_DEFAULTS = ("id", "summary", "description", "severity", "row_number", "column_number")


def require_item_catalog(catalog: Catalog) -> None:
    """Items, feeds and batches only exist on the brands' own catalogs: a catalog segment has no items of its
    own, and a retailer's parent catalog belongs to another business."""
    if catalog.is_catalog_segment or catalog.seeded_product_count is not None:
        raise gerr.permission_error("catalog_management")


def upload_fields(upload: FeedUpload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "start_time": cm.meta_time(upload.start_time),
        "end_time": cm.meta_time(upload.end_time),
        "num_detected_items": upload.num_detected_items,
        "num_persisted_items": upload.num_persisted_items,
        "num_invalid_items": upload.num_invalid_items,
        "num_deleted_items": upload.num_deleted_items,
        "error_count": upload.error_count,
        "warning_count": upload.warning_count,
        "error_report": {"report_status": "NOT_REQUESTED"} if upload.end_time else None,
        "input_method": upload.input_method,
        "filename": upload.filename,
        "url": upload.url,
    }


def feed_fields(world: World, feed: ProductFeed) -> dict[str, Any]:
    def product_count() -> int:
        return sum(1 for item in world.product_items.values() if item.feed_id == feed.id)

    def latest_upload() -> dict[str, Any] | None:
        if not feed.upload_ids:
            return None
        upload = world.feed_uploads.get(feed.upload_ids[-1])
        return {k: v for k, v in upload_fields(upload).items() if v is not None} if upload else None

    return {
        "id": feed.id,
        "name": feed.name,
        "product_count": product_count,
        "latest_upload": latest_upload,
        "schedule": feed.schedule,
        "deletion_enabled": feed.deletion_enabled,
        "created_time": cm.meta_time(feed.created_time),
        "ingestion_source_type": "primary_feed",
        "item_sub_type": "PRODUCT_ITEM",
    }


def _schedule(raw: Any) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise gerr.invalid_parameter("Param schedule must be a JSON-encoded object") from None
    if not isinstance(raw, dict):
        raise gerr.invalid_parameter("Param schedule must be a JSON-encoded object")
    return raw


def register(router: Router) -> None:
    @router.edge("catalog", "product_feeds", name="catalog.product_feeds.list", family=FAMILY_CATALOG)
    def list_feeds(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        feeds = [ctx.world.product_feeds[f] for f in catalog.feed_ids if f in ctx.world.product_feeds]
        return ctx.paginate([ctx.select(feed_fields(ctx.world, f), FEED_TYPE) for f in feeds])

    @router.edge(
        "catalog",
        "product_feeds",
        name="catalog.product_feeds.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_feed(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        require_item_catalog(catalog)
        name = str(ctx.param("name") or "").strip()
        if not name:
            raise gerr.invalid_parameter("The parameter name is required")
        feed = ProductFeed(
            id=ctx.world.new_id(),
            catalog_id=catalog.id,
            name=name,
            business_id=catalog.business_id,
            schedule=_schedule(ctx.param("schedule")),
            deletion_enabled=ctx.bool_param("deletion_enabled", True),
            created_time=ctx.now(),
        )
        ctx.world.product_feeds[feed.id] = feed
        catalog.feed_ids.append(feed.id)
        return {"id": feed.id}

    @router.node("product_feed", name="product_feed.get", family=FAMILY_CATALOG)
    def get_feed(ctx: RequestContext) -> dict[str, Any]:
        cm.settle(ctx.world)
        return ctx.select(feed_fields(ctx.world, ctx.node), FEED_TYPE)

    @router.edge("product_feed", "uploads", name="product_feed.uploads.list", family=FAMILY_CATALOG)
    def list_uploads(ctx: RequestContext) -> dict[str, Any]:
        cm.settle(ctx.world)
        feed: ProductFeed = ctx.node
        uploads = [
            ctx.world.feed_uploads[u] for u in reversed(feed.upload_ids) if u in ctx.world.feed_uploads
        ]
        return ctx.paginate(
            [ctx.select(upload_fields(u), UPLOAD_TYPE, defaults=UPLOAD_DEFAULTS) for u in uploads]
        )

    @router.edge(
        "product_feed",
        "uploads",
        name="product_feed.uploads.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_upload(ctx: RequestContext) -> dict[str, Any]:
        feed: ProductFeed = ctx.node
        cm.settle(ctx.world)
        update_only = ctx.bool_param("update_only", False)
        file = ctx.files.get("file")
        url = str(ctx.param("url") or "").strip()
        if file is not None:
            parsed = cm.parse_feed(file.stream)  # read as it is parsed
            upload = cm.create_upload(
                ctx.world,
                feed,
                parsed,
                update_only=update_only,
                input_method="Manual Upload",
                filename=file.filename or None,
            )
        elif url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https", "file") or (
                parts.scheme != "file" and (parts.hostname or "") not in cm.LOCAL_HOSTS
            ):
                # Not Meta's rule: the sandbox never reaches out to the network.
                raise gerr.invalid_parameter(
                    "Param url must be an http(s) URL on 127.0.0.1/localhost or a file:// path in the sandbox"
                )
            data, issue = cm.fetch_feed_url(url)
            parsed = (
                cm.parse_feed(data)
                if data is not None
                else cm.ParsedFeed(file_issues=[issue] if issue else [])
            )
            upload = cm.create_upload(
                ctx.world, feed, parsed, update_only=update_only, input_method="Upload from URL", url=url
            )
        else:
            raise gerr.invalid_parameter(
                "Either a file or a url must be provided to create an upload session"
            )
        return {"id": upload.id}

    @router.node("feed_upload", name="feed_upload.get", family=FAMILY_CATALOG)
    def get_upload(ctx: RequestContext) -> dict[str, Any]:
        upload: FeedUpload = ctx.node
        cm.poll_upload(ctx.world, upload)
        return ctx.select(upload_fields(upload), UPLOAD_TYPE, defaults=UPLOAD_DEFAULTS)

    @router.edge("feed_upload", "errors", name="feed_upload.errors", family=FAMILY_CATALOG)
    def list_upload_errors(ctx: RequestContext) -> dict[str, Any]:
        upload: FeedUpload = ctx.node
        cm.settle(ctx.world)
        priority = ctx.param("error_priority")
        if priority is not None and priority not in cm.PRIORITIES:
            raise gerr.invalid_parameter("Param error_priority must be one of {HIGH, MEDIUM, LOW}")
        entries = [e for e in upload.errors if priority is None or e["error_priority"] == priority]
        return ctx.paginate([ctx.select(e, UPLOAD_ERROR_TYPE, defaults=ERROR_DEFAULTS) for e in entries])

    # -- admin --------------------------------------------------------------------------------------------

    @router.admin("/catalog_config", name="admin.catalog_config.get", methods=("GET",))
    def get_catalog_config(app: SandboxApp, request: Request) -> Any:
        with app.world.lock:
            return asdict(app.world.catalog_config)

    @router.admin("/catalog_config", name="admin.catalog_config.set", methods=("POST",))
    def set_catalog_config(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        known = {f.name: f for f in fields(CatalogConfig)}
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown catalog config keys {unknown}; known: {sorted(known)}")
        with app.world.lock:
            cfg = app.world.catalog_config
            for key, value in body.items():
                number = float(value)
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                setattr(cfg, key, int(number) if key == "upload_pending_polls" else number)
            return asdict(cfg)

    @router.admin("/catalogs/<catalog_id>/items", name="admin.catalog_items", methods=("GET",))
    def catalog_items(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        with app.world.lock:
            catalog = app.world.catalogs.get(catalog_id)
            if catalog is None:
                raise KeyError(f"no catalog {catalog_id!r}")
            cm.settle(app.world)
            return {rid: dict(values) for rid, values in catalog.items.items()}
