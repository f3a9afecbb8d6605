"""Dagster resource classes: thin, typed wrappers over the pure modules (Meta client, warehouse, registry).

The instances are created once, in ``kobi_cpas/defs/resources.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field, PrivateAttr

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.config import DEFAULT_API_VERSION, DEFAULT_BASE_URL
from kobi_cpas.meta.dry_run import (
    DRY_RUN_SCRATCH_TAG,
    DRY_RUN_TAG,
    DryRunLedger,
    DryRunMetaClient,
    DryRunWrite,
    is_dry_run,
)
from kobi_cpas.meta.stats import ClientStats
from kobi_cpas.operations.webhook import Delivery, post_text
from kobi_cpas.registry import LoadedRegistry, RegistryError, load_registry
from kobi_cpas.sync.shard_lock import ShardBusy, ShardHold
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import PublishResult, Warehouse, read_analyst
from kobi_cpas.warehouse.host import WRITER_TIME_PREFIX, WriterTime, writer_time
from kobi_cpas.warehouse.scratch import ScratchWarehouse, open_scratch, record_dry_run_writes

# -- dry runs ------------------------------------------------------------------------------------------------
# The Meta resource records the writes a dry run does not send; the warehouse resource stores them in
# meta_dry_run_writes. The two resources meet here, per run id, in the process executing the step.


class _DryRunSession:
    def __init__(self) -> None:
        self.ledger = DryRunLedger()
        self.users = 0
        self.can_store = False  # the warehouse resource of this run is set up in this process


_DRY_RUNS: dict[str, _DryRunSession] = {}
_DRY_RUNS_LOCK = threading.Lock()


def _join_dry_run(run_id: str) -> _DryRunSession:
    with _DRY_RUNS_LOCK:
        session = _DRY_RUNS.setdefault(run_id, _DryRunSession())
        session.users += 1
        return session


def _leave_dry_run(run_id: str) -> None:
    with _DRY_RUNS_LOCK:
        session = _DRY_RUNS.get(run_id)
        if session is not None:
            session.users -= 1
            if session.users <= 0 and not len(session.ledger):
                del _DRY_RUNS[run_id]


def _step_and_tenant() -> tuple[str | None, str | None]:
    """The asset(s) or op writing now and its tenant (partition or op config ``tenant_id``), when known."""
    try:
        ctx = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None, None
    step = (
        ", ".join(k.to_user_string() for k in ctx.assets_def.keys) if ctx.has_assets_def else ctx.op_def.name
    )
    tenant: str | None = None
    try:
        config = ctx.op_config
        if isinstance(config, dict) and config.get("tenant_id"):
            tenant = str(config["tenant_id"])
        elif ctx.has_partition_key or ctx.has_partition_key_range:
            key = ctx.partition_key if ctx.has_partition_key else ctx.partition_key_range.start
            pdef = ctx.assets_def.partitions_def if ctx.has_assets_def else None
            if isinstance(pdef, dg.MultiPartitionsDefinition):
                mkey = key if isinstance(key, dg.MultiPartitionKey) else pdef.get_partition_key_from_str(key)
                tenant = mkey.keys_by_dimension.get("tenant")
            else:
                tenant = str(key)  # the only single-dimension partitions are the tenants
    except Exception:  # the tenant is a label of the record; never a reason to lose the record
        tenant = None
    return step, tenant


def _write_row(run_id: str, write: DryRunWrite) -> dict[str, Any]:
    step, tenant = _step_and_tenant()
    count = write.summary.get("item_count")
    return {
        "write_id": write.write_id,
        "run_id": run_id,
        "tenant_id": tenant,
        "step": step,
        "method": write.method,
        "path": write.path,
        "summary": write.summary_json(),
        "item_count": count if isinstance(count, int) else None,
        "synthetic_id": write.synthetic_id,
        "recorded_at": write.recorded_at,
    }


_CLIENT_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(MetaGraphClient.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


class MetaGraphResource(dg.ConfigurableResource):
    """Meta Graph / Marketing API access. The token is only ever read from the environment (dg.EnvVar) and sent
    in the Authorization header; it never appears in run config, logs or events."""

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Graph API base URL (the sandbox in dev)")
    api_version: str = Field(default=DEFAULT_API_VERSION, description="Pinned Graph API version")
    access_token: str = Field(description="Access token; configure as dg.EnvVar('META_ACCESS_TOKEN')")
    app_secret: str | None = Field(default=None, description="App secret; enables appsecret_proof")
    # The client's own defaults: declared once, on MetaGraphClient.
    timeout_seconds: float = float(_CLIENT_DEFAULTS["timeout"])
    max_total_wait_seconds: float = float(_CLIENT_DEFAULTS["max_total_wait"])
    backoff_base_seconds: float = float(_CLIENT_DEFAULTS["backoff_base"])
    throttle_backoff_base_seconds: float = float(_CLIENT_DEFAULTS["throttle_backoff_base"])
    backoff_scale: float = Field(
        default=1.0,
        description="Multiplies both backoff bases (tests shrink the waits, never the retry logic)",
    )

    _dry_run_id: str | None = PrivateAttr(default=None)
    # The stats of the clients handed out between set-up and teardown (None otherwise: such clients are not kept).
    _run_stats: list[ClientStats] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_stats = []
        run = context.dagster_run
        if run is not None and is_dry_run(run.tags):
            self._dry_run_id = run.run_id
            _join_dry_run(run.run_id)
            context.log.info(
                f"DRY RUN ({DRY_RUN_TAG}=true): Meta writes (POST, DELETE) are NOT sent; each is recorded in "
                "meta_dry_run_writes and this log. Reads go to Meta as usual."
            )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        stats, self._run_stats = self._run_stats or [], None
        if context.log is not None and any(s.requests for s in stats):
            context.log.info(stats[0].summary(*stats[1:]))  # the run's Meta traffic in one line
        if self._dry_run_id is not None:
            _leave_dry_run(self._dry_run_id)

    @property
    def dry_run(self) -> bool:
        return self._dry_run_id is not None

    def get_client(self, logger: logging.Logger | None = None) -> MetaGraphClient:
        kwargs: dict[str, Any] = dict(
            base_url=self.base_url,
            api_version=self.api_version,
            access_token=self.access_token,
            app_secret=self.app_secret or None,
            timeout=self.timeout_seconds,
            max_total_wait=self.max_total_wait_seconds,
            logger=logger,
            backoff_base=self.backoff_base_seconds * self.backoff_scale,
            throttle_backoff_base=self.throttle_backoff_base_seconds * self.backoff_scale,
        )
        client = self._new_client(kwargs)
        if self._run_stats is not None:
            self._run_stats.append(client.stats)
        return client

    def _new_client(self, kwargs: dict[str, Any]) -> MetaGraphClient:
        run_id = self._dry_run_id
        if run_id is None:
            return MetaGraphClient(**kwargs)
        session = _DRY_RUNS.get(run_id)
        if session is None or not session.can_store:
            # Fail closed: a write that cannot be recorded must not be silently dropped either.
            raise dg.Failure(
                description=f"dry run {run_id}: this step uses Meta without the warehouse resource, so the "
                "writes it would send could not be recorded in meta_dry_run_writes. Nothing was sent. Give "
                f"the step the warehouse resource, or run it without the run tag {DRY_RUN_TAG}."
            )
        return DryRunMetaClient(**kwargs, recorder=lambda w: session.ledger.add(_write_row(run_id, w)))


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse. Writers use ``connection()`` (always closed) and ``publish()``. Processes take turns
    on the work database through its writers' lock, held only while a connection is open (never across a wait
    on Meta); how long this run waited for it and held it is logged at the end of the run.

    Inside a run ``publish()`` only records that the analyst file must be rebuilt; the file is published once,
    when the run's resources are torn down (once per run with the in-process executor, once per step process
    with the multiprocess one), with everything committed by then, also after a failed step. A publish copies
    the whole state, so a single one at the end gives analysts the same file. Outside a run (scripts, devenv)
    ``publish()`` is immediate.

    With ``publish_interval_seconds`` > 0 a run only marks the file due, and ``analyst_publish_sensor`` publishes
    at most once per interval: a publish costs in proportion to the whole warehouse, so a fleet of hundreds of
    tenants cannot afford one per run."""

    duckdb_path: str = Field(description="Analyst DuckDB file (KOBI_CPAS_DUCKDB_PATH)")
    lock_timeout_seconds: float = Field(
        default=600.0,
        description="How long a connection waits for other processes' writes (a million-item tenant's snapshot "
        "holds the writer for about a minute; up to three other runs may be ahead)",
    )
    memory_limit: str | None = None
    publish_interval_seconds: float = Field(
        default=0.0,
        ge=0.0,
        description="0: publish the analyst file at the end of every run that wrote. More: runs mark it due and "
        "analyst_publish_sensor publishes at most once per this many seconds (KOBI_CPAS_PUBLISH_INTERVAL_SECONDS)",
    )

    _scratch: ScratchWarehouse | None = PrivateAttr(default=None)
    _dry_run_id: str | None = PrivateAttr(default=None)
    _in_run: bool = PrivateAttr(default=False)  # set up for a run: publishing waits for the teardown
    _publish_due: bool = PrivateAttr(default=False)
    _writer_time: WriterTime | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """In a dry run (run tag kobi/dry_run=true) every connection goes to a scratch copy of the work
        database and nothing is published but the record of the writes not sent (meta_dry_run_writes)."""
        run = context.dagster_run
        if run is None:
            return
        self._in_run = True
        self._writer_time = writer_time()
        if not is_dry_run(run.tags):
            return
        # A re-execution (from failure, or of selected steps) continues on its original run's scratch copy.
        key = run.tags.get(DRY_RUN_SCRATCH_TAG) or run.tags.get("dagster/root_run_id") or run.run_id
        self._scratch = open_scratch(self._real(), key)
        self._dry_run_id = run.run_id
        _join_dry_run(run.run_id).can_store = True
        context.log.info(
            f"DRY RUN: the work database is a scratch copy ({self._scratch.work_path}); Kobi's state and the "
            "analyst file stay as they are, except meta_dry_run_writes."
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            if self._dry_run_id is not None:
                try:
                    stored = self.store_dry_run_writes()
                    if stored:
                        context.log.info(
                            f"DRY RUN: {stored} write(s) not sent to Meta recorded in meta_dry_run_writes"
                        )
                finally:
                    _leave_dry_run(self._dry_run_id)
        finally:
            # Also after a failed step or a failed store: what was committed is published.
            try:
                self._publish_at_teardown(context)
            finally:
                self._log_writer_time(context)

    def _log_writer_time(self, context: dg.InitResourceContext) -> None:
        if self._writer_time is None:
            return
        spent = writer_time().since(self._writer_time)
        self._writer_time = None
        if spent.holds:
            context.log.info(
                f"{WRITER_TIME_PREFIX} waited {spent.waited_s:.3f} s, held {spent.held_s:.3f} s "
                f"over {spent.holds} hold(s)"
            )

    def _publish_at_teardown(self, context: dg.InitResourceContext) -> None:
        if not self._publish_due:
            return
        self._publish_due = False
        real = self._real()
        if self.publish_interval_seconds > 0:
            real.publish_due.mark()
            context.log.info(
                f"analyst file {real.analyst_path} marked due: analyst_publish_sensor publishes it "
                f"(at most once every {self.publish_interval_seconds:.0f} s)"
            )
            return
        try:
            real.publish()
        except Exception as exc:
            # Dagster turns an exception raised here into an engine event and the run still succeeds: say it
            # loudly. The previous analyst file stays in place, complete; the next publish copies the full state.
            context.log.error(
                f"publishing the analyst file {real.analyst_path} at the end of the run failed: "
                f"{type(exc).__name__}: {exc}. Analysts still see the previous publish; the next run that "
                "writes the warehouse publishes everything."
            )
            raise

    @property
    def dry_run(self) -> bool:
        return self._scratch is not None

    def _real(self) -> Warehouse:
        return Warehouse(
            self.duckdb_path,
            lock_timeout=self.lock_timeout_seconds,
            memory_limit=self.memory_limit,
            schema=SCHEMA,
        )

    def publish_now(self) -> PublishResult:
        """Publish the analyst file now, also inside a run (the publish job's only work)."""
        return self._real().publish()

    def publish_wait_reason(self) -> str | None:
        """Why the analyst file needs no publish yet (None: it does), from files beside the work database:
        sensors never open the work database."""
        return self._real().publish_due.wait_reason(self.publish_interval_seconds)

    def get_warehouse(self) -> Warehouse:
        return self._scratch if self._scratch is not None else self._real()

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.get_warehouse().connect() as con:
            yield con

    def read_published(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """Query the published analyst file, read-only: what sensors and schedules read. They never open the
        work database, which a writer may hold. No file yet -> no rows. Inside a run it is the file as of
        the end of the previous run (this run publishes at its end): read the work database instead."""
        return read_analyst(self._real().analyst_path, sql, params)

    def publish(self, con: duckdb.DuckDBPyConnection) -> PublishResult:
        """Publish the analyst file now (outside a run) or at the end of the run (inside one). The result
        describes a publish done now; a deferred one returns an empty result."""
        if self._scratch is not None:
            # The scratch copy is never published; the writes recorded so far are stored (the end of an asset).
            self.store_dry_run_writes()
            return PublishResult(path=self._scratch.analyst_path)
        if self._in_run:
            self._publish_due = True
            return PublishResult(path=self._real().analyst_path)
        return self.get_warehouse().publish(con)

    def store_dry_run_writes(self) -> int:
        """Move the writes this run recorded in this process into meta_dry_run_writes; they are published with
        the run's publish (at teardown)."""
        session = _DRY_RUNS.get(self._dry_run_id or "")
        if session is None:
            return 0
        rows = session.ledger.drain()
        try:
            stored = record_dry_run_writes(self._real(), rows, publish=not self._in_run)
        except BaseException:
            for row in rows:  # kept for the next attempt (teardown)
                session.ledger.add(row)
            raise
        if stored and self._in_run:
            self._publish_due = True
        return stored


class TenantRegistryResource(dg.ConfigurableResource):
    """The tenant registry YAML (KOBI_CPAS_TENANTS)."""

    path: str = Field(description="Path of the tenant registry YAML")

    def read(self) -> LoadedRegistry:
        """The registry, or RegistryError when the file itself is unreadable: for sensors and schedules, which
        turn the error into a skip reason."""
        return load_registry(self.path)

    def load(self) -> LoadedRegistry:
        """The registry for a run: an unreadable file fails the run with the problem as its message."""
        try:
            return self.read()
        except RegistryError as exc:
            # dg.Failure shows the message itself, not a traceback, in the UI and the run log.
            raise dg.Failure(description=str(exc)) from None

    def tenant(self, tenant_id: str):  # -> Tenant
        reg = self.load()
        try:
            return reg, reg.tenant(tenant_id)
        except RegistryError as exc:
            # Only this tenant's entry is broken: its runs fail with the problem, the others are untouched.
            raise dg.Failure(description=str(exc)) from None
        except KeyError:
            raise dg.Failure(
                description=f"tenant '{tenant_id}' is not in the registry {reg.path}: it was removed or renamed; "
                "the tenant sensor will drop its partition"
            ) from None


class CatalogSyncResource(dg.ConfigurableResource):
    """Knobs of the catalog sync: how Meta's upload sessions and report jobs are polled, where feed files are
    staged, and how often the status sensor re-checks requests still processing at Meta."""

    workdir: str = Field(description="Folder for feed downloads and upload files (git-ignored)")
    poll_interval_seconds: float = Field(default=5.0, description="KOBI_CPAS_POLL_SECONDS")
    poll_timeout_seconds: float = 600.0
    status_check_seconds: float = Field(
        default=120.0,
        description="KOBI_CPAS_STATUS_CHECK_SECONDS: at most one status run per tenant in each such interval",
    )
    batch_tenants_per_run: int = Field(
        default=20,
        ge=1,
        description="KOBI_CPAS_BATCH_TENANTS_PER_RUN: due tenants per fleet run of the batch cadence (a run's "
        "fixed cost is shared by this many tenants; 1 gives every tenant its own run)",
    )
    shard_wait_seconds: float = Field(
        default=900.0,
        description="KOBI_CPAS_SHARD_WAIT_SECONDS: how long a tenant's own sync run waits for another process "
        "syncing the same catalog (a fleet run syncing it, another run of the tenant) before it fails",
    )

    _holds: dict[str, ShardHold] = PrivateAttr(default_factory=dict)

    def hold_shard(self, tenant_id: str, log: Any) -> None:
        """Take the tenant's sync lock for the rest of this run (given back at teardown): one sync of a catalog
        at a time, also against runs that sync many tenants. Waits up to ``shard_wait_seconds``."""
        if tenant_id in self._holds:
            return
        hold = ShardHold(self.workdir, tenant_id)
        try:
            hold.acquire(0)
        except ShardBusy:
            log.info(f"tenant '{tenant_id}': another process is syncing its catalog; waiting for it")
            try:
                hold.acquire(self.shard_wait_seconds)
            except ShardBusy as exc:
                raise dg.Failure(description=str(exc)) from None
        self._holds[tenant_id] = hold

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for hold in self._holds.values():
            hold.release()
        self._holds.clear()


class AlertWebhookResource(dg.ConfigurableResource):
    """Where alerts for a person are POSTed (a Slack-compatible incoming webhook, ``{"text": ...}``). The URL
    is a credential: configure it as dg.EnvVar('KOBI_CPAS_ALERT_WEBHOOK_URL'); unset, alerts are only recorded
    in pipeline_alerts."""

    url: str | None = Field(default=None, description="KOBI_CPAS_ALERT_WEBHOOK_URL (secret); None: not sent")
    timeout_seconds: float = 5.0

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def secrets(self) -> list[str]:
        """Values that must never be stored or sent (the URL itself)."""
        return [self.url] if self.url else []

    def deliver(self, text: str) -> Delivery:
        """POST ``text``; never raises (a failure is the returned Delivery, with a redacted reason)."""
        if not self.url:
            return Delivery(False, "no webhook configured")
        return post_text(self.url, text, self.timeout_seconds)
