"""Check specs of the catalog sync domain (results are emitted by the assets that compute them)."""

import dagster as dg

DELETION_GUARD = "replace_deletion_guard"
FEED_READABLE = "feed_file_readable"
INVALID_SHARE = "invalid_item_share"
OVERRIDE_TAG = "kobi/override_deletion_guard"

replace_plan_check_specs = [
    dg.AssetCheckSpec(
        name=DELETION_GUARD,
        asset="replace_feed_plan",
        blocking=True,
        description="Blocks the replace upload when it is empty or would delete more than the tenant's "
        "max_delete_share (default 5 %) of the live catalog. A person can override one run with the run tag "
        f"{OVERRIDE_TAG}=true.",
    )
]

feed_snapshot_check_specs = [
    dg.AssetCheckSpec(
        name=FEED_READABLE,
        asset="feed_snapshot",
        blocking=True,
        description="ERROR when the feed file could not be read at all (encoding, delimiter, missing columns, "
        "empty file); the previous snapshot stays in sync meanwhile.",
    ),
    dg.AssetCheckSpec(
        name=INVALID_SHARE,
        asset="feed_snapshot",
        description="WARN when more than 5 % of the feed's items are invalid (see feed_item_issues).",
    ),
]
