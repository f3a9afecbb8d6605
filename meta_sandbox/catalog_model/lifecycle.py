"""When queued work completes: uploads after ``upload_pending_polls`` status polls or by world clock
(``upload_processing_seconds`` > 0); batches ``batch_processing_seconds`` after the call. Work is applied in the
order it completes; ``settle`` applies whatever the world clock has made due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from meta_sandbox.catalog_model.batch import apply_batch
from meta_sandbox.catalog_model.uploads import complete_upload
from meta_sandbox.state import FeedUpload, World


def poll_upload(world: World, upload: FeedUpload) -> None:
    """A status read of the session: counts as a poll and may complete it (poll rule)."""
    settle(world)
    upload.polls += 1
    if upload.end_time is None and upload.processing_seconds <= 0 and upload.polls > upload.pending_polls:
        complete_upload(world, upload, world.now())


def settle(world: World) -> None:
    """Apply every upload (clock rule) and batch whose processing time has passed, in completion order."""
    now = world.now()
    due: list[tuple[datetime, int, Any]] = []
    for n, upload in enumerate(world.feed_uploads.values()):
        if upload.end_time is None and upload.processing_seconds > 0:
            at = upload.start_time + timedelta(seconds=upload.processing_seconds)
            if at <= now:
                due.append((at, n, upload))
    offset = len(world.feed_uploads)
    for n, batch in enumerate(world.items_batches.values()):
        if not batch.applied:
            at = batch.created_time + timedelta(seconds=batch.processing_seconds)
            if at <= now:
                due.append((at, offset + n, batch))
    for at, _n, work in sorted(due, key=lambda d: (d[0], d[1])):
        if isinstance(work, FeedUpload):
            complete_upload(world, work, at)
        else:
            apply_batch(world, work, at)
