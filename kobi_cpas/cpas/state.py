"""What Kobi created or observed for each partnership, kept as state instead of hand edits of the registry.

The registry declares intent (retailer, parent catalog, rule, onboarding mode) and may omit the catalog segment id
and the dedicated ad account.
``cpas_state.segments`` holds, per tenant and retailer, the segment Kobi created, found under the retailer's
business or read from the registry, and how it was last seen shared. The segment job and the daily
reconciliation write it; every CPAS step reads the registry through :func:`with_recorded_segments`, so a
segment Kobi created is used everywhere without anyone copying its id.

A segment id declared in the registry wins over a recorded one (a person's decision): the reconciliation then
records the declared one. ``cpas_state.ad_accounts`` holds the brand's ad accounts Meta shows dedicated to each
retailer, written by the daily reconciliation; a declared ``dedicated_ad_account_id`` wins over them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import duckdb

from kobi_cpas.registry.models import Tenant
from kobi_cpas.warehouse.sql import transaction

# Internal DDL (kobi_cpas.tables lists it).
DDL = (
    "CREATE SCHEMA IF NOT EXISTS cpas_state",
    """CREATE TABLE IF NOT EXISTS cpas_state.segments (
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  catalog_segment_id VARCHAR NOT NULL,
  parent_catalog_id VARCHAR,
  owner_business_id VARCHAR,         -- business the segment was created or found under
  segment_name VARCHAR,
  origin VARCHAR NOT NULL,           -- created (Kobi's POST), found (by name, before creating) or registry
  share_status VARCHAR,              -- not_shared, pending or accepted, for the brand's business, as last seen
  shared_with_business_id VARCHAR,
  recorded_at TIMESTAMPTZ NOT NULL,  -- when the segment id was first recorded
  observed_at TIMESTAMPTZ NOT NULL,  -- when Kobi last read it on Meta
  run_id VARCHAR,                    -- the Dagster run that last wrote the row
  PRIMARY KEY (tenant_id, retailer)
)""",
    # The brand's Collaborative Ads ad accounts Meta shows dedicated to each retailer (the brand's
    # cpas_business_setup_config.ad_accounts, each account's collaborative_ads_partner_businesses), as the daily
    # reconciliation last observed them.
    """CREATE TABLE IF NOT EXISTS cpas_state.ad_accounts (
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  ad_account_id VARCHAR NOT NULL,    -- act_<digits>
  partner_business_id VARCHAR,       -- the retailer's business Meta shows it dedicated to
  first_observed_at TIMESTAMPTZ NOT NULL,
  observed_at TIMESTAMPTZ NOT NULL,
  run_id VARCHAR,
  PRIMARY KEY (tenant_id, retailer, ad_account_id)
)""",
)

ORIGINS = ("created", "found", "registry")


@dataclass(frozen=True)
class SegmentRecord:
    tenant_id: str
    retailer: str
    catalog_segment_id: str
    parent_catalog_id: str | None
    owner_business_id: str | None
    segment_name: str | None
    origin: str
    share_status: str | None
    shared_with_business_id: str | None
    recorded_at: datetime
    observed_at: datetime
    run_id: str | None = None


_COLUMNS = [f.name for f in fields(SegmentRecord)]


def read_segments(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[str, SegmentRecord]:
    """The tenant's recorded segments by retailer."""
    rows = con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM cpas_state.segments WHERE tenant_id = ?", [tenant_id]
    ).fetchall()
    return {r[1]: SegmentRecord(*r) for r in rows}


def record_segment(con: duckdb.DuckDBPyConnection, rec: SegmentRecord) -> None:
    """Upsert the pair's row. A new segment id restarts ``recorded_at``; the same one keeps the first."""
    if rec.origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, not {rec.origin!r}")
    with transaction(con):
        cur = con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM cpas_state.segments WHERE tenant_id = ? AND retailer = ?",
            [rec.tenant_id, rec.retailer],
        ).fetchone()
        values = {f: getattr(rec, f) for f in _COLUMNS}
        old = dict(zip(_COLUMNS, cur, strict=True)) if cur is not None else None
        if old is not None and old["catalog_segment_id"] == rec.catalog_segment_id:
            # the same segment seen again: when and how it was first recorded stays, and what only its creation
            # knew (owner business, name) is not forgotten by a later observation
            values["recorded_at"], values["origin"] = old["recorded_at"], old["origin"]
            for k in ("parent_catalog_id", "owner_business_id", "segment_name"):
                values[k] = values[k] if values[k] is not None else old[k]
        con.execute(
            "DELETE FROM cpas_state.segments WHERE tenant_id = ? AND retailer = ?",
            [rec.tenant_id, rec.retailer],
        )
        con.execute(
            f"INSERT INTO cpas_state.segments ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[c] for c in _COLUMNS],
        )


def _fill_missing(tenant: Tenant, field: str, found: dict[str, str]) -> Tenant:
    """The tenant with each retailer's ``field`` filled from ``found`` (retailer -> value) where the registry
    leaves it out; a declared value always stays."""
    retailers = [
        r.model_copy(update={field: found[r.retailer]})
        if getattr(r, field) is None and found.get(r.retailer)
        else r
        for r in tenant.cpas_retailers
    ]
    changed = any(a is not b for a, b in zip(retailers, tenant.cpas_retailers, strict=True))
    return tenant.model_copy(update={"cpas_retailers": retailers}) if changed else tenant


def with_recorded_segments(tenant: Tenant, recorded: dict[str, SegmentRecord]) -> Tenant:
    """The tenant with each retailer's missing ``catalog_segment_id`` filled from the recorded state."""
    return _fill_missing(
        tenant, "catalog_segment_id", {k: rec.catalog_segment_id for k, rec in recorded.items()}
    )


def record_ad_accounts(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    observed: dict[str, tuple[str, str | None]],
    now: datetime,
    run_id: str | None,
) -> None:
    """Replace the tenant's observed accounts with ``observed`` (ad account -> (retailer, partner business)):
    an account still observed keeps its ``first_observed_at``; one Meta no longer shows is dropped."""
    accounts = sorted(observed)
    with transaction(con):
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _kobi_accounts AS
               SELECT unnest($acts::VARCHAR[]) AS ad_account_id, unnest($retailers::VARCHAR[]) AS retailer,
                      unnest($partners::VARCHAR[]) AS partner_business_id""",
            {
                "acts": accounts,
                "retailers": [observed[a][0] for a in accounts],
                "partners": [observed[a][1] for a in accounts],
            },
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _kobi_accounts_new AS
               SELECT $t AS tenant_id, n.retailer, n.ad_account_id, n.partner_business_id,
                      coalesce(o.first_observed_at, $now) AS first_observed_at, $now AS observed_at, $run AS run_id
               FROM _kobi_accounts n
               LEFT JOIN cpas_state.ad_accounts o
                 ON o.tenant_id = $t AND o.retailer = n.retailer AND o.ad_account_id = n.ad_account_id""",
            {"t": tenant_id, "now": now, "run": run_id},
        )
        con.execute("DELETE FROM cpas_state.ad_accounts WHERE tenant_id = ?", [tenant_id])
        con.execute("INSERT INTO cpas_state.ad_accounts SELECT * FROM _kobi_accounts_new")
        con.execute("DROP TABLE _kobi_accounts_new")
        con.execute("DROP TABLE _kobi_accounts")


def read_ad_accounts(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[str, tuple[str, ...]]:
    """The tenant's observed dedicated ad accounts by retailer (sorted)."""
    rows = con.execute(
        """SELECT retailer, list(ad_account_id ORDER BY ad_account_id) FROM cpas_state.ad_accounts
           WHERE tenant_id = ? GROUP BY retailer""",
        [tenant_id],
    ).fetchall()
    return {r[0]: tuple(r[1]) for r in rows}


def published_ad_accounts(
    read: Callable[[str, list[Any]], list[tuple]],
) -> dict[str, dict[str, tuple[str, ...]]]:
    """Every tenant's observed dedicated ad accounts by retailer (sorted), as the daily reconciliation last
    published them, read with ``read(sql, params)`` (the warehouse resource's ``read_published``): for sensors
    and schedules, which never open the work database. ``cpas_partnerships.observed_ad_account_ids`` is written
    by the same run and from the same observation as ``cpas_state.ad_accounts``. An analyst file published
    before the column existed holds none."""
    try:
        rows = read(
            """SELECT tenant_id, retailer, observed_ad_account_ids FROM cpas_partnerships
               WHERE coalesce(observed_ad_account_ids, '') <> ''""",
            [],
        )
    except (duckdb.CatalogException, duckdb.BinderException):
        return {}
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for tenant_id, retailer, ids in rows:
        out.setdefault(str(tenant_id), {})[str(retailer)] = tuple(sorted(str(ids).split(",")))
    return out


def with_recorded_ad_accounts(tenant: Tenant, observed: dict[str, tuple[str, ...]]) -> Tenant:
    """The tenant with each retailer's missing ``dedicated_ad_account_id`` filled from the observed state (the
    first, when Meta shows several; the partnership's reconciliation reports that)."""
    return _fill_missing(
        tenant, "dedicated_ad_account_id", {k: accounts[0] for k, accounts in observed.items() if accounts}
    )
