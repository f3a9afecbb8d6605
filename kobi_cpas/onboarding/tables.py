"""The analyst table of onboarding."""

from __future__ import annotations

from kobi_cpas.warehouse.specs import TableSpec, col

TENANT_ONBOARDING = TableSpec(
    name="tenant_onboarding",
    domain="onboarding",
    comment="The preflight of each tenant before and while it is live: one row per check (business, catalog, "
    "event sources, each dedicated ad account, other feeds on the catalog, items already in it) with what Kobi "
    "found and what a person should do. A blocking row keeps the tenant's first sync from running.",
    key=("tenant_id", "check_name", "object_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col(
            "check_name",
            "VARCHAR",
            "business, catalog, checkout, event_sources, ad_account, other_feed or existing_items",
            False,
        ),
        col(
            "object_id",
            "VARCHAR",
            "The Meta object checked (business, catalog, feed or ad account id)",
            False,
        ),
        col(
            "status",
            "VARCHAR",
            "ok; warning (works, but needs a person); blocking (Kobi cannot work for the tenant); confirm (the "
            "first sync waits for a person's yes)",
            False,
        ),
        col("finding", "VARCHAR", "What Kobi found", False),
        col("next_action", "VARCHAR", "What to do, with exact instructions; NULL when nothing is needed"),
        col("item_count", "BIGINT", "Items concerned (catalog, feed or existing items), when it applies"),
        col(
            "kept_items",
            "BIGINT",
            "existing_items: ids the feed sends again (the first replace overwrites them)",
        ),
        col(
            "linked_items",
            "BIGINT",
            "existing_items: ids the feed no longer has whose variants it sends (linked by previous_id or by the "
            "variant id starting with the old id)",
        ),
        col("left_items", "BIGINT", "existing_items: ids the feed does not send (left in their own feed)"),
        col("new_items", "BIGINT", "existing_items: feed ids the catalog does not hold yet"),
        col("observed_at", "TIMESTAMPTZ", "When Kobi read Meta", False),
    ),
)

ANALYST_TABLES = (TENANT_ONBOARDING,)
