"""Marketing API versions: Meta's published release and expiry dates, in one place, and what they mean for the
configured version.

Source: Meta's Marketing API version history (developers.facebook.com, Marketing API changelog, "Versions"),
read 2026-12-03. A version without an expiry date is listed with ``None`` ("TBD" on Meta's page). Update this
table when Meta publishes a new version or an expiry date; ``DEFAULT_API_VERSION`` is the newest version this
code is verified against (the test-only ``facebook-business`` SDK is pinned to the same major version).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

# version -> (release date, expiry date or None while Meta says "TBD")
MARKETING_API_VERSIONS: dict[str, tuple[date, date | None]] = {
    "v27.0": (date(2026, 11, 4), None),
    "v26.0": (date(2026, 7, 29), None),
    "v25.0": (date(2026, 2, 18), date(2027, 2, 23)),
    "v24.0": (date(2025, 10, 8), date(2026, 11, 10)),
    "v23.0": (date(2025, 5, 29), date(2026, 6, 9)),
    "v22.0": (date(2025, 1, 21), date(2026, 2, 19)),
    "v21.0": (date(2024, 10, 2), date(2025, 9, 9)),
    "v20.0": (date(2024, 5, 21), date(2025, 5, 6)),
}
DEFAULT_API_VERSION = "v26.0"
OLDEST_LISTED = min(MARKETING_API_VERSIONS, key=lambda v: MARKETING_API_VERSIONS[v][0])
# Meta announces expiry dates months ahead; two months leave time to test and roll out an upgrade.
WARN_BEFORE = timedelta(days=60)
# "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: vX"
VERSION_RETIRED_CODE = 2635


class VersionState(StrEnum):
    SUPPORTED = "supported"
    EXPIRING = "expiring"  # within WARN_BEFORE of its expiry date
    RETIRED = "retired"
    UNKNOWN = "unknown"  # not in the table: newer than this code knows, or older than the oldest listed


@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: VersionState
    expires: date | None
    message: str

    @property
    def ok(self) -> bool:
        return self.state in (VersionState.SUPPORTED, VersionState.EXPIRING)


def _major(version: str) -> float:
    try:
        return float(version.lstrip("v"))
    except ValueError:
        return -1.0


def version_status(version: str, today: date) -> VersionStatus:
    """What Meta's published dates say about ``version`` on ``today``."""
    entry = MARKETING_API_VERSIONS.get(version)
    if entry is None:
        if _major(version) > _major(DEFAULT_API_VERSION):
            return VersionStatus(
                version,
                VersionState.UNKNOWN,
                None,
                f"META_API_VERSION {version} is newer than {DEFAULT_API_VERSION}, the newest version this code is "
                "verified against: run the contract tests against it before relying on it",
            )
        return VersionStatus(
            version,
            VersionState.RETIRED,
            None,
            f"META_API_VERSION {version} is older than every version Meta still lists ({OLDEST_LISTED} and "
            f"later): set a supported version, e.g. {DEFAULT_API_VERSION}",
        )
    _, expires = entry
    if expires is not None and today >= expires:
        return VersionStatus(
            version,
            VersionState.RETIRED,
            expires,
            f"META_API_VERSION {version} was retired by Meta on {expires:%Y-%m-%d}: calls answer error "
            f"{VERSION_RETIRED_CODE}; set a supported version, e.g. {DEFAULT_API_VERSION}",
        )
    if expires is not None and today >= expires - WARN_BEFORE:
        return VersionStatus(
            version,
            VersionState.EXPIRING,
            expires,
            f"META_API_VERSION {version} expires on {expires:%Y-%m-%d} ({(expires - today).days} days): "
            f"upgrade to {DEFAULT_API_VERSION} before then",
        )
    until = f"until {expires:%Y-%m-%d}" if expires else "with no expiry date announced yet"
    return VersionStatus(version, VersionState.SUPPORTED, expires, f"{version} is supported by Meta {until}")


def retired_message(version: str | None) -> str:
    """The hint for error 2635: the configured version is no longer served."""
    v = version or "in use"
    return f"META_API_VERSION {v} is retired by Meta; set a supported version (e.g. {DEFAULT_API_VERSION})"
