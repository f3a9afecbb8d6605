"""Pure feed layer of the Meta catalog sync: read, parse, validate and hash product feeds in DuckDB.

No Dagster and no Meta API calls here; see ``snapshot.ingest_feed`` for the entry point.
"""

from __future__ import annotations

from kobi_cpas.feeds.errors import FeedError, FeedFetchError, FeedFileError
from kobi_cpas.feeds.parser import ParseResult, parse_feed
from kobi_cpas.feeds.reader import FetchResult, fetch_feed
from kobi_cpas.feeds.snapshot import SnapshotResult, ingest_feed, stage_exists, stage_table_names, tenant_slug

__all__ = [
    "FeedError",
    "FeedFetchError",
    "FeedFileError",
    "FetchResult",
    "ParseResult",
    "SnapshotResult",
    "fetch_feed",
    "ingest_feed",
    "parse_feed",
    "stage_exists",
    "stage_table_names",
    "tenant_slug",
]
