"""Analyst tables of the tenant registry, Meta catalogs and dry runs (the product's complete schema is
assembled in ``kobi_cpas.tables``)."""

from __future__ import annotations

from kobi_cpas.warehouse.specs import TableSpec, col

TENANT_REGISTRY = TableSpec(
    name="tenant_registry",
    domain="tenants",
    comment="One row per tenant and CPAS retailer as declared in the tenant registry YAML (a tenant with no "
    "retailer has one row with retailer NULL).",
    key=("tenant_id", "retailer"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id (sanitised; also the Dagster partition key)", False),
        col("tenant_name", "VARCHAR", "Display name of the tenant"),
        col("business_id", "VARCHAR", "Meta business id of the brand", False),
        col("catalog_id", "VARCHAR", "Meta product catalog id the brand's feed syncs to", False),
        col("feed_source", "VARCHAR", "Feed location: absolute path or http(s) URL"),
        col("feed_format", "VARCHAR", "Feed format: csv, tsv or xml"),
        col("replace_cadence", "VARCHAR", "Replace feed cadence: daily or hourly"),
        col("retention_days", "INTEGER", "Days a removed item stays in the replace feed as out of stock"),
        col("max_delete_share", "DOUBLE", "Share of the live catalog a replace upload may delete"),
        col("retailer", "VARCHAR", "Marketplace retailer (trendyol, hepsiburada, ...); NULL if none"),
        col("catalog_segment_id", "VARCHAR", "Catalog segment the retailer shares with the brand"),
        col("dedicated_ad_account_id", "VARCHAR", "The brand's ad account dedicated to this retailer"),
        col("partnership_status", "VARCHAR", "pending, accepted or revoked, as declared in the registry"),
        col("onboarding_mode", "VARCHAR", "api, manual or hybrid: what Kobi automates for this retailer"),
        col("marketplace_seller_id", "VARCHAR", "The brand's seller id on the marketplace"),
        col("registry_path", "VARCHAR", "Registry file the row was read from"),
        col("registry_hash", "VARCHAR", "sha256 of the registry file content"),
        col("loaded_at", "TIMESTAMPTZ", "When the registry was loaded"),
    ),
)

META_CATALOGS = TableSpec(
    name="meta_catalogs",
    domain="catalogs",
    comment="One row per tenant catalog as Meta reports it, with the pixels/apps connected and a call to action.",
    key=("tenant_id", "catalog_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("catalog_id", "VARCHAR", "Meta product catalog id", False),
        col("catalog_name", "VARCHAR", "Catalog name in Meta"),
        col("vertical", "VARCHAR", "Catalog vertical (commerce, ...)"),
        col("product_count", "BIGINT", "Number of products Meta holds in the catalog"),
        col("is_catalog_segment", "BOOLEAN", "True when this id is a catalog segment, not a catalog"),
        col("commerce_merchant_settings_id", "VARCHAR", "Commerce merchant settings id, if any"),
        col("commerce_cta", "VARCHAR", "commerce_merchant_settings.cta (ONSITE_CHECKOUT = onsite shop)"),
        col("is_onsite_shop", "BOOLEAN", "True when the catalog backs an onsite (checkout on Meta) shop"),
        col("pixel_count", "INTEGER", "Pixels connected as external event sources"),
        col("app_count", "INTEGER", "Apps connected as external event sources"),
        col("external_event_sources", "VARCHAR", "Connected sources as 'type:id:name' joined by '; '"),
        col("has_event_source", "BOOLEAN", "True when at least one pixel or app is connected"),
        col("call_to_action", "VARCHAR", "What to do about this catalog; NULL when nothing is needed"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read the catalog from Meta", False),
    ),
)

META_DRY_RUN_WRITES = TableSpec(
    name="meta_dry_run_writes",
    domain="dry_run",
    comment="One row per Meta write (POST or DELETE) a dry run (run tag kobi/dry_run=true, or "
    "`kobi-cpas run --dry-run`) did NOT send, with a summary of its payload. Nothing else of a dry run "
    "reaches Kobi's state or this file; a normal run of the same job sends these writes.",
    key=("write_id",),
    columns=(
        col("write_id", "VARCHAR", "Unique id of the recorded write", False),
        col("run_id", "VARCHAR", "Dagster run id of the dry run", False),
        col("tenant_id", "VARCHAR", "Kobi tenant of the run (partition or op config); NULL if not known"),
        col("step", "VARCHAR", "Asset key(s) or op that would have sent the write"),
        col("method", "VARCHAR", "HTTP method: POST or DELETE", False),
        col("path", "VARCHAR", "Graph API path after the version, e.g. <catalog_id>/items_batch", False),
        col(
            "summary",
            "VARCHAR",
            "JSON payload summary: parameter names, safe scalar values (names, statuses), item_count, "
            "first_retailer_ids, upload files (size_bytes, row_count); never a token or credential",
        ),
        col(
            "item_count",
            "BIGINT",
            "Items the write carried (batch requests or upload file rows); NULL if none",
        ),
        col("synthetic_id", "VARCHAR", "The dryrun- id the dry run answered with (what Meta would create)"),
        col("recorded_at", "TIMESTAMPTZ", "When the dry run intercepted the write", False),
    ),
)

ANALYST_TABLES = (TENANT_REGISTRY, META_CATALOGS, META_DRY_RUN_WRITES)
