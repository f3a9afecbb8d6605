"""Pydantic models of the tenant registry (modelled on the illustrative registry of the Kobi CPAS spec).

Identifiers are validated strictly rather than silently rewritten: two different raw ids must never collapse
into one tenant. Tenant ids become SQL values, file names and Dagster partition keys, so only
``[a-z0-9][a-z0-9_-]{0,63}`` survives (UUIDs fit).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


def _coerce_id(v: Any) -> Any:
    # YAML turns unquoted ids into ints; Graph ids are strings everywhere else.
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class FeedSource(_Strict):
    source: str = Field(description="local path (relative to the registry file) or http(s) URL")
    format: FeedFormat = FeedFormat.csv
    name: str = Field(default="kobi primary feed", description="name of the Meta product feed Kobi owns")

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


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

    @field_validator("replace_cron", "update_cron", "batch_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression, e.g. '0 3 * * *'")
        return v

    @property
    def effective_replace_cron(self) -> str:
        """The replace cron; an hourly cadence left with the daily default runs at minute 0 of every hour."""
        minute, hour = self.replace_cron.split()[:2]
        if self.replace_cadence == "hourly" and hour != "*":
            return f"{minute} * * * *"
        return self.replace_cron


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

    _ids = field_validator(
        "catalog_segment_id",
        "parent_catalog_id",
        "retailer_business_id",
        "marketplace_seller_id",
        mode="before",
    )(_coerce_id)

    @field_validator("retailer")
    @classmethod
    def _retailer(cls, v: str) -> str:
        v = v.lower()
        if not RETAILER_RE.match(v):
            raise ValueError("must be lower-case letters, digits, '_' or '-' (e.g. 'trendyol')")
        return v

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

    @model_validator(mode="after")
    def _accepted_needs_ids(self) -> CpasRetailer:
        if self.partnership_status == PartnershipStatus.accepted and not (
            self.catalog_segment_id and self.dedicated_ad_account_id
        ):
            raise ValueError("an accepted partnership needs catalog_segment_id and dedicated_ad_account_id")
        return self


class Tenant(_Strict):
    tenant_id: str
    name: str | None = None
    business_id: GraphId
    catalog_id: GraphId
    feed: FeedSource
    sync: SyncSettings = SyncSettings()
    cpas_retailers: list[CpasRetailer] = Field(default_factory=list)
    high_problem_share_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    # Declared product sets (name, filter, metadata, target, allow_live_deletion, absent); validated by the loader
    # against kobi_cpas.cpas.product_sets.DeclaredProductSet.
    product_sets: list[dict[str, Any]] = Field(default_factory=list)

    _ids = field_validator("business_id", "catalog_id", mode="before")(_coerce_id)

    @field_validator("tenant_id", mode="before")
    @classmethod
    def _tenant_id(cls, v: Any) -> str:
        s = str(v).strip().lower()
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
