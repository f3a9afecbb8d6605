"""Check specs of the CPAS domain (results are emitted by the assets that compute them)."""

import dagster as dg

SEGMENT_COUNT = "segment_product_count_matches"
PARTNERSHIP_DRIFT = "no_partnership_drift"
QC = "collaborative_ads_qc"
PRODUCT_SETS = "product_sets_in_sync"
COUNT_TOLERANCE = 0.02

cpas_partnerships_check_specs = [
    dg.AssetCheckSpec(
        name=SEGMENT_COUNT,
        asset="cpas_partnerships",
        description=f"WARN when a segment's product_count on Meta differs from the count Kobi expects (the segment "
        f"rule on the latest feed snapshot) by more than {COUNT_TOLERANCE:.0%}.",
    ),
    dg.AssetCheckSpec(
        name=PARTNERSHIP_DRIFT,
        asset="cpas_partnerships",
        description="WARN on drift: segment unshared, revoked, emptied or missing, ad account missing, or a second "
        "retailer's segment used in a dedicated ad account. next_action says what to do.",
    ),
]

execution_manifest_check_specs = [
    dg.AssetCheckSpec(
        name=QC,
        asset="execution_manifest",
        description="WARN when an ad breaks a collaborative-ads constraint: custom tracking specs, deep link off the "
        "merchant's site, multi_share_end_card, changed description, objective, segment of another retailer.",
    )
]

product_sets_check_specs = [
    dg.AssetCheckSpec(
        name=PRODUCT_SETS,
        asset="cpas_product_sets",
        description="WARN when a declared product set could not be created, updated or deleted (e.g. a live set).",
    )
]
