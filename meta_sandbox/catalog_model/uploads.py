"""Feed uploads: create an upload session, then validate and apply the parsed file when it completes.

A replace upload (``update_only`` false) on a feed with ``deletion_enabled`` deletes the items *of that feed*
(the feed whose upload last wrote them) that are not valid rows of the file; an empty replace upload therefore
deletes all of them. Items only ever written by the Batch API belong to no feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kobi_cpas.feeds.fields import GROUP_REJECT_COLUMNS
from meta_sandbox.catalog_model.feed_files import ParsedFeed, ParsedRow
from meta_sandbox.catalog_model.issues import (
    DUPLICATE_ID,
    MALFORMED_ROW,
    Issue,
    group_mismatch,
    validate_fields,
)
from meta_sandbox.catalog_model.items import delete_item, product_item_id, upsert_item
from meta_sandbox.state import FeedUpload, ProductFeed, World


def create_upload(
    world: World,
    feed: ProductFeed,
    parsed: ParsedFeed,
    *,
    update_only: bool,
    input_method: str,
    filename: str | None = None,
    url: str | None = None,
) -> FeedUpload:
    cfg = world.catalog_config
    upload = FeedUpload(
        id=world.new_id(),
        feed_id=feed.id,
        catalog_id=feed.catalog_id,
        start_time=world.now(),
        update_only=update_only,
        business_id=feed.business_id,
        input_method=input_method,
        filename=filename,
        url=url,
        parsed=parsed,
        processing_seconds=float(cfg.upload_processing_seconds)
        + float(cfg.upload_seconds_per_item) * len(parsed.rows),
        pending_polls=int(cfg.upload_pending_polls),
    )
    world.feed_uploads[upload.id] = upload
    feed.upload_ids.append(upload.id)
    return upload


def complete_upload(world: World, upload: FeedUpload, at: datetime) -> None:
    """Validate the parsed file against the catalog as it is now, apply it and record the errors."""
    parsed: ParsedFeed = upload.parsed or ParsedFeed()
    catalog = world.catalogs[upload.catalog_id]
    feed = world.product_feeds.get(upload.feed_id)
    found: list[tuple[Issue, ParsedRow | None, int | None]] = []  # issue, row, column_number

    if parsed.file_issues:
        found += [(issue, None, None) for issue in parsed.file_issues]
        _finish_upload(world, upload, at, found, detected=len(parsed.rows), invalid=0, persisted=0, deleted=0)
        return

    fatal_rows: set[int] = set()
    seen_ids: set[str] = set()
    for row in parsed.rows:
        rid = row.fields.get("id", "")
        full = not upload.update_only or rid not in catalog.items
        issues = validate_fields(row.fields, full=full)
        if row.malformed:
            issues.insert(0, MALFORMED_ROW)
        if rid and rid in seen_ids:
            issues.insert(0, DUPLICATE_ID)
        if rid:
            seen_ids.add(rid)
        for issue in issues:
            found.append((issue, row, parsed.column_number(issue.field)))
            if issue.fatal:
                fatal_rows.add(row.row_number)

    # Items sharing an item_group_id must agree on the group-defining fields; the first row of a group sets
    # the value and every later row that differs is rejected.
    for name in GROUP_REJECT_COLUMNS:
        if name not in parsed.columns:
            continue
        first: dict[str, str] = {}
        for row in parsed.rows:
            group = row.fields.get("item_group_id", "")
            if not group:
                continue
            value = row.fields.get(name, "")
            if group not in first:
                first[group] = value
            elif value != first[group]:
                found.append((group_mismatch(name), row, parsed.column_number(name)))
                fatal_rows.add(row.row_number)

    valid = [r for r in parsed.rows if r.row_number not in fatal_rows]
    feed_id = feed.id if feed else None
    for row in valid:
        rid = row.fields["id"]
        upsert_item(world, catalog, rid, row.fields, replace=not upload.update_only, at=at, feed_id=feed_id)
    deleted = 0
    if not upload.update_only and feed is not None and feed.deletion_enabled:
        keep = {r.fields["id"] for r in valid}
        for rid in [rid for rid in catalog.items if rid not in keep]:
            item = world.product_items.get(product_item_id(world, catalog.id, rid) or "")
            if item is not None and item.feed_id == feed.id:
                delete_item(world, catalog, rid)
                deleted += 1
    _finish_upload(
        world,
        upload,
        at,
        found,
        detected=len(parsed.rows),
        invalid=len(fatal_rows),
        persisted=len(valid),
        deleted=deleted,
    )


def _finish_upload(
    world: World,
    upload: FeedUpload,
    at: datetime,
    found: list[tuple[Issue, ParsedRow | None, int | None]],
    *,
    detected: int,
    invalid: int,
    persisted: int,
    deleted: int,
) -> None:
    # Aggregate like Meta: one entry per (severity, type, field) with the first occurrence's row and column,
    # total_count, and every occurrence as a sample (so each rejected row can be found).
    groups: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    ordered = sorted(found, key=lambda f: 0 if f[0].fatal else 1)
    for issue, row, column in ordered:
        key = (issue.severity, issue.error_type, issue.field)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = {
                "id": int(world.new_id()),
                "summary": issue.summary,
                "description": issue.description,
                "severity": issue.severity,
                "row_number": row.row_number if row else None,
                "column_number": column,
                # The SDK defines error_type but Meta's upload-error sample carries none, and Meta's values are
                # not documented: the field is accepted and never served (None is omitted), so clients must
                # work from the summary as they do against Meta.
                "error_type": None,
                "error_priority": "HIGH" if issue.fatal else issue.priority,
                "total_count": 0,
                "samples": {"data": []},
            }
        entry["total_count"] += 1
        if row is not None:
            rid = row.fields.get("id") or None
            # A sample is its own Graph object (ProductFeedUploadErrorSample) with its own id.
            sample = {"id": world.new_id(), "row_number": row.row_number, "retailer_id": rid}
            entry["samples"]["data"].append(sample)
    upload.errors = list(groups.values())
    upload.end_time = at
    upload.num_detected_items = detected
    upload.num_invalid_items = invalid
    upload.num_persisted_items = persisted
    upload.num_deleted_items = deleted
    upload.error_count = sum(1 for issue, _r, _c in found if issue.fatal)
    upload.warning_count = sum(1 for issue, _r, _c in found if not issue.fatal)
    upload.parsed = None  # applied: drop the rows
