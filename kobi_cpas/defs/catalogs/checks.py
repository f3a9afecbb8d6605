"""Check specs of the catalogs domain (their results are emitted by the assets that compute them)."""

import dagster as dg

EVENT_SOURCE_CHECK = "pixel_or_app_connected"
API_VERSION_CHECK = "meta_api_version_supported"

meta_catalogs_check_specs = [
    dg.AssetCheckSpec(
        name=EVENT_SOURCE_CHECK,
        asset="meta_catalogs",
        description="WARN when the tenant's catalog has no pixel or app connected as an external event source: "
        "Advantage+ catalog ads then lack the signals they optimise on.",
    ),
    dg.AssetCheckSpec(
        name=API_VERSION_CHECK,
        asset="meta_catalogs",
        description="WARN from 60 days before Meta retires the configured META_API_VERSION; ERROR (and no call to "
        "Meta) once it is retired. Meta's release and expiry dates live in kobi_cpas/meta/versions.py.",
    ),
]
