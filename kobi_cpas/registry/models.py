"""Pydantic models of the tenant registry (modelled on the illustrative registry of the Kobi CPAS spec).

Identifiers are validated strictly rather than silently rewritten: two different raw ids must never collapse
into one tenant. Tenant ids become SQL values, file names and Dagster partition keys, so only
``[a-z0-9][a-z0-9_-]{0,63}`` survives (UUIDs fit).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kobi_cpas.registry.onboarding_steps import check_step_modes

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
GRAPH_ID_RE = re.compile(r"^[0-9]{1,32}$")
AD_ACCOUNT_RE = re.compile(r"^act_[0-9]{1,32}$")
RETAILER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PartnershipStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"


class OnboardingMode(StrEnum):
    api = "api"
    manual = "manual"
    hybrid = "hybrid"


class FeedFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    xml = "xml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


GraphId = Annotated[str, Field(pattern=GRAPH_ID_RE.pattern, description="numeric Graph API id, as a string")]


def _reject_bool(v: Any) -> Any:
    # An unquoted true/false is a YAML boolean; str() would silently turn it into the id "True".
    if isinstance(v, bool):
        raise ValueError(f'got the YAML boolean {str(v).lower()} where an id is expected: quote it ("{v}")')
    return v


def _coerce_id(v: Any) -> Any:
    # YAML turns unquoted ids into ints; Graph ids are strings everywhere else.
    return str(_reject_bool(v)) if isinstance(v, int) else v


def check_cron(expr: str) -> str:
    """A real 5-field cron expression that fires at least once (croniter), else ValueError."""
    if len(expr.split()) != 5:
        raise ValueError(
            "must be a 5-field cron expression (minute hour day month weekday), e.g. '0 3 * * *'"
        )
    try:
        croniter(expr, datetime(2026, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"is not a valid cron expression, e.g. '0 3 * * *' ({exc})") from None
    return expr


def check_timezone(name: str) -> str:
    """An IANA time zone name known to zoneinfo (e.g. 'Europe/Istanbul'), else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a known IANA time zone, e.g. 'Europe/Istanbul'") from None
    return name


class FeedSource(_Strict):
    """Where a tenant's feed comes from and the limits that keep one bad source from stalling the others."""

    source: str = Field(description="local path (relative to the registry file) or http(s) URL")
    format: FeedFormat = FeedFormat.csv
    name: str = Field(default="kobi primary feed", description="name of the Meta product feed Kobi owns")
    download_deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="total time a download may take (redirects, headers, body)",
    )
    max_bytes: int = Field(default=2 << 30, ge=1, description="size cap of the feed file (default 2 GiB)")
    allow_private_redirects: bool = Field(
        default=False, description="follow redirects to loopback / private hosts (refused by default)"
    )
    feeds_root: str | None = Field(
        default=None,
        description="folder local feed paths must lie under (relative to the registry file); default: the "
        "registry file's folder",
    )
    max_shrink_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="hold a snapshot whose valid items fall (or turn invalid) by more than this share of the "
        "last good snapshot's valid items",
    )
    min_shrink_items: int = Field(
        default=5, ge=0, description="a drop of fewer items than this never holds a snapshot (tiny feeds)"
    )

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


ADOPTED_ITEMS_MODES = ("retain", "keep")


class SyncSettings(_Strict):
    replace_cadence: Literal["daily", "hourly"] = "daily"
    replace_cron: str = "0 3 * * *"
    update_cron: str = "5 * * * *"
    batch_cron: str = "*/15 * * * *"
    timezone: str = "Europe/Istanbul"
    retention_days: int = Field(default=90, ge=0, le=3650)
    max_delete_share: float = Field(default=0.05, ge=0.0, le=1.0)
    batch_chunk_size: int = Field(default=5000, ge=1, le=5000)
    shards: int = Field(default=1, ge=1, le=64)
    # Items a brand's catalog held before Kobi's first upload that the feed does not send: "retain" keeps them
    # out of stock for retention_days from their adoption, then Kobi deletes them; "keep" never deletes them.
    adopted_items: str = "retain"

    @field_validator("adopted_items", mode="before")
    @classmethod
    def _adopted_items(cls, v: Any) -> str:
        if v not in ADOPTED_ITEMS_MODES:
            raise ValueError(
                f"must be 'retain' (items adopted from the brand's existing catalog stay out of stock for "
                f"retention_days, then Kobi deletes them) or 'keep' (Kobi never deletes them), not {v!r}"
            )
        return str(v)

    @field_validator("replace_cron", "update_cron", "batch_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)

    @property
    def effective_replace_cron(self) -> str:
        """The replace cron; an hourly cadence left with the daily default runs at minute 0 of every hour."""
        minute, hour = self.replace_cron.split()[:2]
        if self.replace_cadence == "hourly" and hour != "*":
            return f"{minute} * * * *"
        return self.replace_cron


class InsightsSettings(_Strict):
    start_date: date | None = Field(
        default=None,
        description="the first day of the tenant's shared-item metrics (YYYY-MM-DD), e.g. its first CPAS "
        "campaign: the daily pull, backfills and make run pull no day before it",
    )


class CpasRetailer(_Strict):
    retailer: str
    catalog_segment_id: GraphId | None = None
    parent_catalog_id: GraphId | None = None
    retailer_business_id: GraphId | None = None
    dedicated_ad_account_id: str | None = None
    partnership_status: PartnershipStatus = PartnershipStatus.pending
    onboarding_mode: OnboardingMode = OnboardingMode.manual
    marketplace_seller_id: str | None = None
    segment_filter: dict[str, Any] | None = Field(
        default=None, description="product-set rule of the segment (Meta's rule language)"
    )
    onboarding_steps: dict[str, str] = Field(
        default_factory=dict,
        description="per onboarding step, api, hybrid or manual where this partnership automates less than "
        "Meta allows (see kobi_cpas/registry/onboarding_steps.py)",
    )

    _ids = field_validator(
        "catalog_segment_id",
        "parent_catalog_id",
        "retailer_business_id",
        "marketplace_seller_id",
        mode="before",
    )(_coerce_id)
    _retailer_text = field_validator("retailer", "dedicated_ad_account_id", mode="before")(_reject_bool)

    @field_validator("retailer")
    @classmethod
    def _retailer(cls, v: str) -> str:
        v = v.lower()
        if not RETAILER_RE.match(v):
            raise ValueError("must be lower-case letters, digits, '_' or '-' (e.g. 'trendyol')")
        return v

    @field_validator("onboarding_steps")
    @classmethod
    def _steps(cls, v: dict[str, str]) -> dict[str, str]:
        return check_step_modes(v)

    @field_validator("dedicated_ad_account_id")
    @classmethod
    def _ad_account(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = str(v)
        if v.isdigit():
            v = f"act_{v}"
        if not AD_ACCOUNT_RE.match(v):
            raise ValueError("must look like 'act_<digits>'")
        return v

    # The segment id and the dedicated ad account may be left out: Kobi records the segment it created or found
    # and the accounts Meta shows dedicated to the retailer (cpas_state), and reports an accepted partnership
    # with neither (drift ad_account_unknown).


class Tenant(_Strict):
    tenant_id: str
    name: str | None = None
    business_id: GraphId
    catalog_id: GraphId
    feed: FeedSource
    sync: SyncSettings = SyncSettings()
    insights: InsightsSettings = InsightsSettings()
    cpas_retailers: list[CpasRetailer] = Field(default_factory=list)
    high_problem_share_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    # Declared product sets (name, filter, metadata, target, allow_live_deletion, absent); validated by the loader
    # against kobi_cpas.registry.product_sets.DeclaredProductSet.
    product_sets: list[dict[str, Any]] = Field(default_factory=list)

    _ids = field_validator("business_id", "catalog_id", mode="before")(_coerce_id)

    @field_validator("tenant_id", mode="before")
    @classmethod
    def _tenant_id(cls, v: Any) -> str:
        s = str(_reject_bool(v)).strip().lower()
        if not TENANT_ID_RE.match(s):
            raise ValueError(
                "must be 1-64 characters of lower-case letters, digits, '_' or '-', starting with a letter "
                "or digit (it becomes a partition key, a file name and a SQL value)"
            )
        return s

    @model_validator(mode="after")
    def _unique_retailers(self) -> Tenant:
        seen: set[str] = set()
        accounts: dict[str, str] = {}
        for r in self.cpas_retailers:
            if r.retailer in seen:
                raise ValueError(f"retailer '{r.retailer}' is listed twice in cpas_retailers")
            seen.add(r.retailer)
            if r.dedicated_ad_account_id:
                other = accounts.get(r.dedicated_ad_account_id)
                if other:
                    raise ValueError(
                        f"ad account {r.dedicated_ad_account_id} is used for both '{other}' and '{r.retailer}': "
                        "Meta links a dedicated ad account to one retailer only"
                    )
                accounts[r.dedicated_ad_account_id] = r.retailer
        return self

    def retailer(self, name: str) -> CpasRetailer:
        for r in self.cpas_retailers:
            if r.retailer == name:
                return r
        raise KeyError(f"tenant '{self.tenant_id}' has no retailer '{name}'")


class Registry(_Strict):
    version: int = 1
    tenants: list[Tenant]

    @model_validator(mode="after")
    def _unique_tenants(self) -> Registry:
        seen: set[str] = set()
        for t in self.tenants:
            if t.tenant_id in seen:
                raise ValueError(f"tenant_id '{t.tenant_id}' appears twice")
            seen.add(t.tenant_id)
        return self

    def tenant(self, tenant_id: str) -> Tenant:
        for t in self.tenants:
            if t.tenant_id == tenant_id:
                return t
        raise KeyError(f"no tenant '{tenant_id}' in the registry")

    @property
    def tenant_ids(self) -> list[str]:
        return [t.tenant_id for t in self.tenants]
