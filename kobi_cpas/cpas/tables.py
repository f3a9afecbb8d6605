"""Analyst tables of the CPAS domain."""

from __future__ import annotations

from kobi_cpas.warehouse.specs import TableSpec, col

CPAS_PARTNERSHIPS = TableSpec(
    name="cpas_partnerships",
    domain="cpas",
    comment="One row per tenant and retailer: the Collaborative Ads partnership as declared and as Meta shows "
    "it, drift, and the next action (for a person when Meta offers no API).",
    key=("tenant_id", "retailer"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("retailer", "VARCHAR", "Marketplace retailer", False),
        col("catalog_segment_id", "VARCHAR", "Catalog segment the retailer shares with the brand"),
        col("parent_catalog_id", "VARCHAR", "The retailer's catalog the segment is cut from"),
        col("segment_filter", "VARCHAR", "Segment rule (Meta's product-set rule language, canonical JSON)"),
        col("partnership_status", "VARCHAR", "Observed on Meta: pending, accepted or revoked"),
        col("declared_status", "VARCHAR", "partnership_status in the registry"),
        col("onboarding_mode", "VARCHAR", "api, manual or hybrid: what Kobi automates for this retailer"),
        col(
            "dedicated_ad_account_id",
            "VARCHAR",
            "The brand's ad account dedicated to this retailer: declared in the registry, else the one Meta shows",
        ),
        col("shared_with_business_id", "VARCHAR", "Business the segment is shared with (NULL: not shared)"),
        col(
            "permitted_tasks",
            "VARCHAR",
            "Tasks granted on the segment: empty, Meta does not expose them (its agencies edge returns "
            "Business objects)",
        ),
        col(
            "collab_terms",
            "VARCHAR",
            "Collaboration terms of the share: empty, Meta does not expose them",
        ),
        col("segment_product_count", "BIGINT", "Products in the segment according to Meta"),
        col(
            "expected_product_count",
            "BIGINT",
            "Products Kobi expects: the segment rule on the latest feed snapshot",
        ),
        col(
            "drift",
            "VARCHAR",
            "Drift codes, comma-separated (segment_missing, unshared, segment_empty, "
            "count_mismatch, ad_account_missing, ad_account_mixed_retailers, ad_account_mismatch, "
            "ad_account_unknown, ...); empty when healthy",
        ),
        col(
            "next_action",
            "VARCHAR",
            "What to do next, with exact instructions; NULL when nothing is needed",
        ),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read Meta", False),
        col(
            "segment_id_source",
            "VARCHAR",
            "Where catalog_segment_id comes from: registry (declared), created or found (recorded by Kobi: "
            "created through the API, or found under the retailer's business by Kobi's name); NULL: none yet",
        ),
        col(
            "observed_ad_account_ids",
            "VARCHAR",
            "The brand's Collaborative Ads ad accounts Meta shows dedicated to this retailer, comma-separated "
            "(cpas_business_setup_config and collaborative_ads_partner_businesses; recorded in cpas_state)",
        ),
        col(
            "ad_account_id_source",
            "VARCHAR",
            "Where dedicated_ad_account_id comes from: registry (declared; wins) or observed (Meta); NULL: none",
        ),
    ),
)

CPAS_RETAILER_DIRECTORY = TableSpec(
    name="cpas_retailer_directory",
    domain="cpas",
    comment="Collaborative Ads retailers: Meta's directory, each tenant's suggested partners and the "
    "collaboration requests sent, with their status.",
    key=("source", "tenant_id", "merchant_business_id", "object_id"),
    columns=(
        col("source", "VARCHAR", "directory, suggested or request", False),
        col("tenant_id", "VARCHAR", "Tenant the suggestion or request is for (NULL for directory rows)"),
        col("merchant_business_id", "VARCHAR", "The retailer's Meta business id", False),
        col("merchant_name", "VARCHAR", "Retailer name"),
        col("countries", "VARCHAR", "Countries, comma-separated"),
        col("status", "VARCHAR", "Recommendation or request status (e.g. PENDING, APPROVED)"),
        col("object_id", "VARCHAR", "Recommendation or collaboration request id"),
        col("brands", "VARCHAR", "Brands named in the request, comma-separated"),
        col("requester", "VARCHAR", "Who requested: AGENCY, BRAND or MERCHANT"),
        col("created_time", "VARCHAR", "When Meta created the request/recommendation"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read Meta", False),
    ),
)

EXECUTION_MANIFEST = TableSpec(
    name="execution_manifest",
    domain="cpas",
    comment="Campaigns, ad sets and ads of each dedicated CPAS ad account whose promoted object is a catalog "
    "segment, with the QC verdict against Meta's collaborative-ads constraints.",
    key=("tenant_id", "retailer", "campaign_id", "adset_id", "ad_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("retailer", "VARCHAR", "Retailer of the dedicated ad account", False),
        col("ad_account_id", "VARCHAR", "Dedicated ad account (act_...)", False),
        col("campaign_id", "VARCHAR", "Campaign id", False),
        col("campaign_name", "VARCHAR", "Campaign name"),
        col("campaign_status", "VARCHAR", "Campaign effective status"),
        col(
            "objective",
            "VARCHAR",
            "Campaign objective: OUTCOME_SALES (PRODUCT_CATALOG_SALES on campaigns made before v21.0)",
        ),
        col("catalog_segment_id", "VARCHAR", "promoted_object.product_catalog_id: the catalog segment"),
        col("adset_id", "VARCHAR", "Ad set id (NULL for a campaign without ad sets)"),
        col("adset_name", "VARCHAR", "Ad set name"),
        col("adset_status", "VARCHAR", "Ad set effective status"),
        col("product_set_id", "VARCHAR", "Product set of the ad set"),
        col("ad_id", "VARCHAR", "Ad id (NULL for an ad set without ads)"),
        col("ad_name", "VARCHAR", "Ad name"),
        col("ad_status", "VARCHAR", "Ad effective status (archived and deleted ads included)"),
        col("creative_id", "VARCHAR", "Creative id"),
        col("qc_status", "VARCHAR", "pass or fail"),
        col("qc_codes", "VARCHAR", "Failed QC rules, comma-separated"),
        col("qc_issues", "VARCHAR", "What is wrong and how to fix it"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read Meta", False),
    ),
)

CPAS_PRODUCT_SETS = TableSpec(
    name="cpas_product_sets",
    domain="cpas",
    comment="Product sets declared per tenant in the registry and what Kobi did on Meta to match them.",
    key=("tenant_id", "target", "name"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("target", "VARCHAR", "'catalog' (the brand's catalog) or a retailer (its segment)", False),
        col("catalog_id", "VARCHAR", "Catalog or segment id the set lives in"),
        col("name", "VARCHAR", "Product set name on Meta", False),
        col("product_set_id", "VARCHAR", "Meta product set id"),
        col("action", "VARCHAR", "create, update, delete, keep or skip"),
        col("status", "VARCHAR", "done, refused (e.g. live set), failed or skipped"),
        col("message", "VARCHAR", "Why, for refused/failed/skipped"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi synced", False),
    ),
)

CPAS_ONBOARDING_STEPS = TableSpec(
    name="cpas_onboarding_steps",
    domain="cpas",
    comment="One row per tenant, retailer and onboarding step: how far Meta lets the step be automated, what "
    "this partnership decided (api, hybrid or manual), where it stands and what to do next.",
    key=("tenant_id", "retailer", "step"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("retailer", "VARCHAR", "Marketplace retailer", False),
        col("step_order", "INTEGER", "Position of the step in the onboarding (1 = first)", False),
        col(
            "step",
            "VARCHAR",
            "retailer_program, collaboration_request, segment_shared, brand_accepts, dedicated_ad_account, "
            "people_assigned or campaign",
            False,
        ),
        col(
            "meta_mode",
            "VARCHAR",
            "The most automation Meta's API allows for the step: api, hybrid or manual",
        ),
        col("mode", "VARCHAR", "What this partnership decided: api (Kobi through the API), hybrid or manual"),
        col(
            "status",
            "VARCHAR",
            "done; todo (a person or a Kobi job acts next); waiting (on the retailer or an earlier step); blocked "
            "(something is wrong: see next_action)",
            False,
        ),
        col("next_action", "VARCHAR", "What to do, and who does it (NULL when done)"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read Meta", False),
    ),
)

ANALYST_TABLES = (
    CPAS_PARTNERSHIPS,
    CPAS_RETAILER_DIRECTORY,
    EXECUTION_MANIFEST,
    CPAS_PRODUCT_SETS,
    CPAS_ONBOARDING_STEPS,
)
