"""The dedicated ad accounts as Meta reports them (time zone, currency, name), recorded where the insights pull
already fetches them, so the daily schedule knows each account's local time without calling Meta itself."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import duckdb

from kobi_cpas.insights.pull import AccountInfo, account_info
from kobi_cpas.insights.requests import normalize_account_id
from kobi_cpas.insights.stage import opener
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.warehouse.specs import TableSpec, col
from kobi_cpas.warehouse.warehouse import replace_rows

META_AD_ACCOUNTS = TableSpec(
    name="meta_ad_accounts",
    domain="insights",
    comment="One row per dedicated CPAS ad account as Meta last reported it to the insights pull: its time "
    "zone (the days of its insights, and the local hour of the daily pull), currency and name.",
    key=("ad_account_id",),
    columns=(
        col("ad_account_id", "VARCHAR", "Ad account id, act_<digits>", False),
        col("tenant_id", "VARCHAR", "Kobi tenant id the account is dedicated to", False),
        col("retailer", "VARCHAR", "Marketplace retailer the account is dedicated to"),
        col("account_name", "VARCHAR", "Ad account name in Meta"),
        col("timezone_name", "VARCHAR", "IANA time zone of the account (timezone_name)", False),
        col("currency", "VARCHAR", "Account currency (ISO 4217)"),
        col("fetched_at", "TIMESTAMPTZ", "When Meta reported these values", False),
    ),
)


def fetch_account(
    client: MetaGraphClient,
    con: Any,
    *,
    tenant_id: str,
    retailer: str | None,
    ad_account_id: str,
    now: datetime | None = None,
) -> AccountInfo:
    """``GET act_<id>?fields=id,name,timezone_name,currency`` (the pull's own request) and its row in
    meta_ad_accounts, replaced. ``con``: a connection or a callable opening one (opened after Meta answered)."""
    info = account_info(client, ad_account_id)
    record = {
        "ad_account_id": info.ad_account_id,
        "tenant_id": tenant_id,
        "retailer": retailer,
        "account_name": info.name,
        "timezone_name": info.timezone_name,
        "currency": info.currency,
        "fetched_at": now or datetime.now(UTC),
    }
    with opener(con)() as db:
        replace_rows(db, META_AD_ACCOUNTS, [record], "ad_account_id = ?", [info.ad_account_id])
    return info


def account_timezones(
    read: Callable[[str, list[Any]], list[tuple]], ad_account_ids: Iterable[str]
) -> dict[str, str]:
    """``{act_<id>: timezone_name}`` for the accounts meta_ad_accounts holds, read with ``read(sql, params)``
    (the warehouse resource's ``read_published``). An analyst file published before the table existed holds
    none of them."""
    ids = sorted({normalize_account_id(a) for a in ad_account_ids})
    if not ids:
        return {}
    try:
        rows = read(
            f"SELECT ad_account_id, timezone_name FROM {META_AD_ACCOUNTS.name} "
            f"WHERE ad_account_id IN ({', '.join('?' for _ in ids)})",
            ids,
        )
    except duckdb.CatalogException:
        return {}
    return {str(a): str(tz) for a, tz in rows if tz}
