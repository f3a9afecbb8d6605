"""Check specs of the catalog sync domain (results are emitted by the assets that compute them)."""

import dagster as dg

from kobi_cpas.sync.guards import OVERRIDE_TAG
from kobi_cpas.sync.shrink_guard import OVERRIDE_SHRINK_TAG

DELETION_GUARD = "replace_deletion_guard"
ADOPTED_GUARD = "adopted_deletion_guard"
FEED_READABLE = "feed_file_readable"
INVALID_SHARE = "invalid_item_share"
SHRINK_GUARD = "feed_shrink_guard"

replace_plan_check_specs = [
    dg.AssetCheckSpec(
        name=DELETION_GUARD,
        asset="replace_feed_plan",
        blocking=True,
        description="Blocks the replace upload when it is empty, when the items it would delete plus the live "
        "items it would flip to out of stock (gone from the source, kept by retention) exceed the tenant's "
        "max_delete_share (default 5 %) of the live catalog, or while Meta's reported deletions of an earlier "
        "replace exceeded its plan (surplus deletions: someone else writes to the feed) and no person has "
        f"confirmed them. A person can override one run with the run tag {OVERRIDE_TAG}=true; for a surplus that "
        "run is the confirmation. Deletions of items adopted from the brand's existing catalog never block it "
        f"(see {ADOPTED_GUARD}).",
    ),
    dg.AssetCheckSpec(
        name=ADOPTED_GUARD,
        asset="replace_feed_plan",
        description="WARN when the items adopted from the brand's existing catalog whose retention has passed "
        "would, with the replace's own deletions and flips, remove more than the tenant's max_delete_share of the "
        "catalog (Kobi's live items and the adopted ones still out of stock): their Batch API DELETE is held (not "
        "sent; adopted_held in catalog_item_state, an ADOPTED_DELETIONS_HELD problem in catalog_diagnostics) "
        "while the replace upload of Kobi's feed goes on. A run with the run tag "
        f"{OVERRIDE_TAG}=true sends them.",
    ),
]

feed_snapshot_check_specs = [
    dg.AssetCheckSpec(
        name=FEED_READABLE,
        asset="feed_snapshot",
        blocking=True,
        description="ERROR when the feed could not be downloaded (connection refused, HTTP error, deadline, size "
        "cap, refused redirect) or read at all (encoding, delimiter, missing columns, empty file); the previous "
        "snapshot stays in sync meanwhile.",
    ),
    dg.AssetCheckSpec(
        name=SHRINK_GUARD,
        asset="feed_snapshot",
        blocking=True,
        description="Holds a snapshot whose valid items fall, or turn invalid, by more than the tenant's "
        "feed.max_shrink_share (default 20 %) of the last good snapshot (a feed cut short would set most of the "
        "catalog out of stock). The next snapshot of different content showing the drop again applies it; a "
        f"person can override one run with the run tag {OVERRIDE_SHRINK_TAG}=true.",
    ),
    dg.AssetCheckSpec(
        name=INVALID_SHARE,
        asset="feed_snapshot",
        description="WARN when more than 5 % of the feed's items are invalid (see feed_item_issues).",
    ),
]
