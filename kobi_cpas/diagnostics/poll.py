"""The hourly diagnostics poll of one tenant catalog, and the on-demand item view.

``poll_catalog`` keeps DuckDB connections short (Meta calls happen with the work database closed):

1. read what to fetch (dictionary age, finished syncs whose errors are not stored yet);
2. call Meta: the dictionary (daily), upload / batch errors, item errors of every priority through every page,
   the catalog's product count and diagnostics groups — each source on its own, so one failing source (after
   the client's retries) is logged and skipped without stopping the others;
3. store and stage everything, merge into ``catalog_diagnostics`` (only sources read in this run may resolve
   problems), rebuild ``catalog_diagnostics_summary`` and today's ``catalog_health`` row, prune old state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.diagnostics import collect as col
from kobi_cpas.diagnostics import item_ids
from kobi_cpas.diagnostics import meta_checks as mc
from kobi_cpas.diagnostics.dictionary import (
    DEFAULT_LOCALE,
    DICTIONARY_MAX_AGE,
    PRIORITIES,
    fetch_error_types,
    needs_refresh,
    store_error_types,
)
from kobi_cpas.diagnostics.lifecycle import MergeCounts, merge_staged, record_poll_failure
from kobi_cpas.diagnostics.summary import write_health, write_summary
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas.registry.models import Tenant
from kobi_cpas.warehouse import Warehouse
from kobi_cpas.warehouse.sql import transaction

log = logging.getLogger(__name__)
POLL_LOG_RETENTION = timedelta(days=30)


@dataclass
class PollReport:
    tenant_id: str
    catalog_id: str
    polled_at: datetime
    sources_polled: list[str] = field(default_factory=list)
    sources_failed: dict[str, str] = field(default_factory=dict)  # source -> error message
    dictionary_rows: int | None = None  # rows stored when the dictionary was refreshed in this run
    syncs_fetched: int = 0
    item_error_pages: int = 0
    items_with_errors: int = 0
    merge: MergeCounts = field(default_factory=MergeCounts)
    summary_rows: int = 0
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.sources_failed

    def as_metadata(self) -> dict[str, Any]:
        """Flat numbers for Dagster metadata (they plot over time)."""
        h = self.health
        return {
            "new_problems": self.merge.new,
            "resolved_problems": self.merge.resolved,
            "reopened_problems": self.merge.reopened,
            "open_problems": self.merge.open_total,
            "items": h.get("items") or 0,
            "items_with_high": h.get("items_with_high", 0),
            "eligible_share": round(h["eligible_share"], 4) if h.get("eligible_share") is not None else 0.0,
            "item_error_pages": self.item_error_pages,
            "syncs_fetched": self.syncs_fetched,
            "sources_failed": len(self.sources_failed),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failure(report: PollReport, source: str, exc: Exception) -> None:
    report.sources_failed[source] = str(exc)[:2000]
    log.warning("diagnostics %s/%s: %s poll failed: %s", report.tenant_id, report.catalog_id, source, exc)


def prune_state(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime,
    lookback: timedelta = col.DEFAULT_LOOKBACK,
) -> None:
    """Drop internal state no longer needed: row maps of syncs outside the lookback window, of failed syncs and
    of finished replace uploads whose errors are stored (a replace covers its whole shard anyway), stored
    errors outside the window, and poll logs older than 30 days."""
    since = now - lookback
    con.execute(
        """DELETE FROM diag_state.sync_rows WHERE sync_id IN (
             SELECT s.sync_id FROM main.catalog_syncs s WHERE s.tenant_id = ? AND s.catalog_id = ? AND (
               coalesce(s.started_at, s.finished_at) < ? OR s.status = 'failed'
               OR (s.method = 'replace' AND starts_with(s.status, 'finished') AND (
                     s.sync_id IN (SELECT sync_id FROM diag_state.sync_errors_fetched)
                     OR (s.errors_count = 0 AND s.warnings_count = 0)))))""",
        [tenant_id, catalog_id, since],
    )
    con.execute(
        "DELETE FROM diag_state.sync_errors WHERE tenant_id = ? AND catalog_id = ? AND coalesce(sync_started_at, fetched_at) < ?",
        [tenant_id, catalog_id, since],
    )
    con.execute(
        """DELETE FROM diag_state.sync_errors_fetched WHERE tenant_id = ? AND catalog_id = ? AND sync_id NOT IN (
             SELECT sync_id FROM main.catalog_syncs WHERE coalesce(started_at, finished_at) >= ?)""",
        [tenant_id, catalog_id, since],
    )
    con.execute(
        "DELETE FROM diag_state.poll_log WHERE tenant_id = ? AND catalog_id = ? AND polled_at < ?",
        [tenant_id, catalog_id, now - POLL_LOG_RETENTION],
    )


def _map_retailer_ids(
    client: MetaGraphClient, warehouse: Warehouse, tenant_id: str, catalog_id: str, fetch: mc.ItemErrorsFetch
) -> None:
    """Complete items Meta listed without a retailer id: earlier polls first (a short read of the work
    database), then one lookup per remaining id for this run."""
    missing = item_ids.ids_without_retailer_id(fetch)
    if not missing:
        return
    with warehouse.connect() as con:
        known = item_ids.known_retailer_ids(con, tenant_id, catalog_id, missing)
    item_ids.map_retailer_ids(fetch, known, item_ids.RetailerIdLookup(client))
    if fetch.unmapped:
        log.warning(
            "diagnostics %s/%s: %d product item(s) reported without a retailer_id could not be mapped (%s); "
            "their problems stay open as unmapped_item rows",
            tenant_id,
            catalog_id,
            len(fetch.unmapped),
            ", ".join(list(fetch.unmapped)[:5]),
        )


def _stage_and_merge(
    con: duckdb.DuckDBPyConnection,
    report: PollReport,
    now: datetime,
    locale: str,
    lookback: timedelta,
    sync_errors: bool,
    items: mc.ItemErrorsFetch | None,
    observation: mc.CatalogObservation | None,
) -> None:
    """The write half of ``poll_catalog``, inside the caller's transaction."""
    tenant_id, catalog_id = report.tenant_id, report.catalog_id
    col.clear_stage(con, tenant_id, catalog_id)
    col.stage_feed_validation(con, tenant_id, catalog_id, now, clear=False)
    report.sources_polled.append("kobi_feed_validation")
    if sync_errors:
        col.stage_sync_problems(con, tenant_id, catalog_id, now, lookback, clear=False)
        # Syncs whose errors could not be read are simply not counted yet (see stage_sync_problems).
        report.sources_polled += [
            s for s in ("feed_upload", "batch_request") if s not in report.sources_failed
        ]
    if items is not None:
        mc.stage_item_errors(con, tenant_id, catalog_id, items, now, clear=False)
        report.sources_polled.append("meta_item_check")
        report.item_error_pages = items.pages
        report.items_with_errors = len({p.get("retailer_id") or p.get("id") for p in items.products})
    if observation is not None:
        mc.store_catalog_observation(con, tenant_id, catalog_id, observation, now)
        mc.stage_catalog_diagnostics(con, tenant_id, catalog_id, observation, now, clear=False)
        report.sources_polled.append("meta_catalog_diagnostics")
    for source, message in report.sources_failed.items():
        record_poll_failure(con, tenant_id, catalog_id, source, now, message)
    report.merge = merge_staged(con, tenant_id, catalog_id, now, locale)
    report.summary_rows = write_summary(con, tenant_id, catalog_id, now)
    report.health = write_health(con, tenant_id, catalog_id, now)
    prune_state(con, tenant_id, catalog_id, now, lookback)


def poll_catalog(
    client: MetaGraphClient,
    warehouse: Warehouse,
    tenant_id: str,
    catalog_id: str,
    *,
    now: datetime | None = None,
    locale: str = DEFAULT_LOCALE,
    page_limit: int = col.DEFAULT_PAGE_LIMIT,
    priorities: Sequence[str] = PRIORITIES,
    lookback: timedelta = col.DEFAULT_LOOKBACK,
    dictionary_max_age: timedelta = DICTIONARY_MAX_AGE,
    item_errors: bool = True,
    sync_errors: bool = True,
    catalog_diagnostics: bool = True,
) -> PollReport:
    """Poll every diagnostics source of one tenant catalog and bring the four analyst tables up to date.

    ``now`` stamps first/last_seen/resolved (default: the current UTC time). A source switched off, or whose
    Meta calls fail after the client's retries, is not staged, so its problems stay as they were (logged in
    ``report.sources_failed`` and ``diag_state.poll_log``). ``priorities`` narrower than all three makes the
    item-error poll partial (it then only resolves problems of those priorities and does not count for
    freshness). Does not publish the warehouse; the caller does."""
    now = now or datetime.now(UTC)
    report = PollReport(tenant_id, catalog_id, now)

    with warehouse.connect() as con:
        locales = [
            loc
            for loc in dict.fromkeys([locale, DEFAULT_LOCALE])
            if needs_refresh(con, loc, now, dictionary_max_age)
        ]
        refs = col.syncs_to_fetch(con, tenant_id, catalog_id, now, lookback) if sync_errors else []

    dictionaries: dict[str, list[dict[str, Any]]] = {}
    for loc in locales:
        try:
            dictionaries[loc] = fetch_error_types(client, loc)
        except (MetaAPIError, ValueError) as exc:
            _failure(report, "dictionary", exc)
    fetched_syncs: list[col.FetchedSyncErrors] = []
    for ref in refs:
        try:
            fetched_syncs.append(col.fetch_sync_errors(client, ref))
        except MetaAPIError as exc:
            _failure(report, ref.source, exc)
    items: mc.ItemErrorsFetch | None = None
    if item_errors:
        try:
            items = mc.fetch_item_errors(client, catalog_id, priorities, page_limit)
        except MetaAPIError as exc:
            _failure(report, "meta_item_check", exc)
    if items is not None:
        _map_retailer_ids(client, warehouse, tenant_id, catalog_id, items)
    observation: mc.CatalogObservation | None = None
    if catalog_diagnostics:
        try:
            observation = mc.fetch_catalog_observation(client, catalog_id)
        except MetaAPIError as exc:
            _failure(report, "meta_catalog_diagnostics", exc)

    with warehouse.connect() as con:
        for loc, entries in dictionaries.items():
            rows = store_error_types(con, entries, loc, now)
            if loc == locale:
                report.dictionary_rows = rows
        for fetched in fetched_syncs:
            col.store_sync_errors(con, fetched, now)
            report.syncs_fetched += fetched.status != "pending"
        # Stage, merge, summary, health and pruning in one transaction: one commit instead of one per statement.
        with transaction(con):
            _stage_and_merge(con, report, now, locale, lookback, sync_errors, items, observation)
    return report


def poll_tenant(client: MetaGraphClient, warehouse: Warehouse, tenant: Tenant, **kwargs: Any) -> PollReport:
    """``poll_catalog`` for the tenant's catalog."""
    return poll_catalog(client, warehouse, tenant.tenant_id, tenant.catalog_id, **kwargs)


def check_items(
    client: MetaGraphClient,
    warehouse: Warehouse,
    tenant_id: str,
    catalog_id: str,
    product_item_ids: Iterable[str],
    *,
    now: datetime | None = None,
    locale: str = DEFAULT_LOCALE,
) -> MergeCounts:
    """The item view on demand: ``GET /{product_item_id}?fields=id,retailer_id,errors`` for these items, merged
    as a partial ``meta_item_check`` poll (it only resolves problems of these items; a deleted item's problems
    resolve)."""
    now = now or datetime.now(UTC)
    fetch, gone = mc.fetch_item_nodes(client, product_item_ids)
    _map_retailer_ids(client, warehouse, tenant_id, catalog_id, fetch)
    with warehouse.connect() as con, transaction(con):
        col.clear_stage(con, tenant_id, catalog_id)
        mc.stage_item_errors(con, tenant_id, catalog_id, fetch, now, gone, clear=False)
        counts = merge_staged(con, tenant_id, catalog_id, now, locale)
        write_summary(con, tenant_id, catalog_id, now)
        write_health(con, tenant_id, catalog_id, now)
    return counts
