"""Check specs of the catalogs domain (their results are emitted by the assets that compute them)."""

import dagster as dg

EVENT_SOURCE_CHECK = "pixel_or_app_connected"

meta_catalogs_check_specs = [
    dg.AssetCheckSpec(
        name=EVENT_SOURCE_CHECK,
        asset="meta_catalogs",
        description="WARN when the tenant's catalog has no pixel or app connected as an external event source: "
        "Advantage+ catalog ads then lack the signals they optimise on.",
    )
]
