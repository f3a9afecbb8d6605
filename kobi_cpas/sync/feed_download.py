"""Download a tenant's feed into its workdir and describe the result in a small JSON manifest.

This runs with no database open: a slow or stuck feed server holds nothing but its own download (total
deadline and size cap from the tenant's ``FeedSource``). The snapshot step then reads the manifest and ingests
the file, or records the failure, inside the work database.

Files in the tenant workdir:

``<tenant>.feed``     the last complete HTTP download; kept, so a ``304 Not Modified`` still has a body to ingest
                      when the work database needs one (a local feed is not copied: it is read where it is).
``feed_file.json``    the manifest of the latest download attempt (see :class:`FeedFileManifest`); the source in
                      it is redacted, never the URL with its credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from kobi_cpas.feeds.errors import FeedFetchError
from kobi_cpas.feeds.reader import (
    FetchLimits,
    fetch_feed,
    is_url,
    local_validator,
    redact_source,
    source_scheme,
)
from kobi_cpas.registry import LoadedRegistry, Tenant

MANIFEST_NAME = "feed_file.json"


@dataclass(frozen=True)
class FeedFileManifest:
    """Outcome of one download: ``outcome`` is ``ok`` (``path`` holds the feed, ``sha256``/``size_bytes`` its
    content; ``not_modified`` when the source said so and the kept copy is that content) or ``failed``
    (``message`` names the source, the tenant and the problem)."""

    tenant_id: str
    source: str
    outcome: str
    path: str | None = None
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    file_validator: str | None = None  # size + ns mtime of ``path`` when described: it must not move after
    message: str | None = None
    fetched_at: str | None = None
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def manifest_path(workdir: Path) -> Path:
    return workdir / MANIFEST_NAME


def read_manifest(workdir: Path) -> FeedFileManifest | None:
    """The manifest of the latest download, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(manifest_path(workdir).read_text(encoding="utf-8"))
        return FeedFileManifest(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_manifest(workdir: Path, manifest: FeedFileManifest) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    target = manifest_path(workdir)
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
    os.replace(tmp, target)
    return target


def feeds_root(registry: LoadedRegistry, tenant: Tenant) -> Path:
    """The folder a local feed must lie under: ``feed.feeds_root`` (relative to the registry file), else the
    registry file's folder."""
    base = registry.path.parent
    if tenant.feed.feeds_root:
        p = Path(tenant.feed.feeds_root).expanduser()
        return (p if p.is_absolute() else base / p).resolve()
    return base.resolve()


def fetch_limits(tenant: Tenant) -> FetchLimits:
    return FetchLimits(
        deadline_seconds=tenant.feed.download_deadline_seconds,
        max_bytes=tenant.feed.max_bytes,
        allow_private_redirects=tenant.feed.allow_private_redirects,
    )


def feed_source(registry: LoadedRegistry, tenant: Tenant) -> str:
    """The source to fetch: a URL as written (any scheme, so a bad one is refused by name), else the path
    resolved against the registry file."""
    raw = tenant.feed.source
    return raw if source_scheme(raw) else registry.feed_location(tenant)


def download_feed(registry: LoadedRegistry, tenant: Tenant, workdir: Path) -> FeedFileManifest:
    """Fetch the tenant's feed within its limits and write the manifest. Never raises for a feed problem:
    a failed download is a manifest with ``outcome = 'failed'``."""
    started = time.perf_counter()
    fetched_at = datetime.now(UTC).isoformat()
    source = feed_source(registry, tenant)
    shown = redact_source(source)
    tid = tenant.tenant_id
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"{tid}.feed"
    prev = read_manifest(workdir)
    # Validators only when their content is at hand: the kept download (HTTP) or the file itself (local).
    kept = None
    if prev is not None and prev.ok and prev.sha256 and prev.path:
        expected = str(dest) if is_url(source) else source
        with contextlib.suppress(OSError):
            if prev.path == expected and Path(prev.path).stat().st_size == prev.size_bytes:
                kept = prev
    base = {"tenant_id": tid, "source": shown, "fetched_at": fetched_at}
    try:
        res = fetch_feed(
            source,
            dest,
            etag=kept.etag if kept else None,
            last_modified=kept.last_modified if kept else None,
            limits=fetch_limits(tenant),
            feeds_root=feeds_root(registry, tenant),
        )
    except FeedFetchError as exc:
        manifest = FeedFileManifest(**base, outcome="failed", message=f"tenant '{tid}': {exc}")
    except OSError as exc:
        manifest = FeedFileManifest(
            **base,
            outcome="failed",
            message=f"tenant '{tid}': feed {shown}: {exc.strerror or type(exc).__name__}",
        )
    else:
        if res.not_modified and kept is not None:
            manifest = FeedFileManifest(
                **base,
                outcome="ok",
                path=kept.path,
                not_modified=True,
                etag=res.etag,
                last_modified=res.last_modified,
                sha256=kept.sha256,
                size_bytes=kept.size_bytes,
            )
        elif res.not_modified or res.path is None:
            manifest = FeedFileManifest(
                **base,
                outcome="failed",
                message=f"tenant '{tid}': feed {shown} answered 'not modified' to an unconditional request",
            )
        else:
            manifest = FeedFileManifest(
                **base,
                outcome="ok",
                path=str(res.path),
                etag=res.etag,
                last_modified=res.last_modified,
                sha256=res.sha256,
                size_bytes=res.size_bytes,
            )
    extra: dict[str, object] = {"duration_seconds": time.perf_counter() - started}
    if manifest.ok and manifest.path:
        try:
            extra["file_validator"] = local_validator(Path(manifest.path).stat())
        except OSError:
            extra.update(
                outcome="failed", message=f"tenant '{tid}': feed {shown}: the file vanished after reading"
            )
    manifest = FeedFileManifest(**{**asdict(manifest), **extra})
    write_manifest(workdir, manifest)
    return manifest


def current_manifest(registry: LoadedRegistry, tenant: Tenant, workdir: Path) -> FeedFileManifest | None:
    """The manifest to ingest. For a local feed it is refreshed here when missing or stale (the file changed
    since feed_file described it, or feed_snapshot runs alone): reading a local file involves no network wait.
    A URL is only ever fetched by feed_file."""
    manifest = read_manifest(workdir)
    if is_url(feed_source(registry, tenant)):
        return manifest
    if manifest is not None and manifest.ok and manifest.path:
        with contextlib.suppress(OSError):
            if local_validator(Path(manifest.path).stat()) == manifest.file_validator:
                return manifest
    return download_feed(registry, tenant, workdir)
