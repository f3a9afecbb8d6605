"""Marketing API version lifecycle: Meta's dates, the 60-day warning, retired versions and error 2635."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import requests

from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.meta.errors import ErrorKind, MetaAPIError, classify, error_from_response
from kobi_cpas.meta.versions import (
    DEFAULT_API_VERSION,
    MARKETING_API_VERSIONS,
    WARN_BEFORE,
    VersionState,
    version_status,
)
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_TOKEN


def test_default_is_listed_and_supported_today() -> None:
    assert DEFAULT_API_VERSION in MARKETING_API_VERSIONS
    status = version_status(DEFAULT_API_VERSION, date.today())
    assert status.state is VersionState.SUPPORTED, status.message


def test_v24_is_retired_since_meta_expired_it() -> None:
    expiry = MARKETING_API_VERSIONS["v24.0"][1]
    assert expiry == date(2026, 11, 10)
    before = version_status("v24.0", expiry - timedelta(days=1))
    assert before.state is VersionState.EXPIRING and "2026-11-10" in before.message
    after = version_status("v24.0", expiry)
    assert after.state is VersionState.RETIRED and not after.ok
    assert DEFAULT_API_VERSION in after.message


@pytest.mark.parametrize(
    "days_left, state", [(61, "supported"), (60, "expiring"), (1, "expiring"), (0, "retired")]
)
def test_warning_window_is_sixty_days(days_left: int, state: str) -> None:
    expiry = MARKETING_API_VERSIONS["v25.0"][1]
    assert expiry is not None
    assert timedelta(days=60) == WARN_BEFORE
    assert version_status("v25.0", expiry - timedelta(days=days_left)).state.value == state


def test_unlisted_versions() -> None:
    assert version_status("v19.0", date(2026, 12, 3)).state is VersionState.RETIRED
    newer = version_status("v99.0", date(2026, 12, 3))
    assert newer.state is VersionState.UNKNOWN and "verified" in newer.message


def test_error_2635_names_the_version_and_the_fix() -> None:
    body = {
        "code": 2635,
        "type": "OAuthException",
        "message": "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest "
        "version: v27.0.",
    }
    assert classify(400, body) is ErrorKind.VERSION_RETIRED
    exc = error_from_response(400, body, method="GET", path="/v24.0/123")
    assert not exc.retryable
    assert "META_API_VERSION v24.0 is retired by Meta; set a supported version" in str(exc)


def test_sandbox_answers_2635_for_a_retired_version(sandbox) -> None:
    resp = requests.get(
        f"{sandbox.url}/v24.0/2000000000000001",
        headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == 2635
    with (
        MetaGraphClient(sandbox.url, "v24.0", SANDBOX_TOKEN, max_retries=0) as client,
        pytest.raises(MetaAPIError) as info,
    ):
        client.get("2000000000000001", params={"fields": "id"})
    assert info.value.kind is ErrorKind.VERSION_RETIRED
    assert "META_API_VERSION v24.0 is retired" in str(info.value)
    # The supported default works against the same world.
    with MetaGraphClient(sandbox.url, DEFAULT_API_VERSION, SANDBOX_TOKEN) as client:
        assert client.get("2000000000000001", params={"fields": "id"})["id"] == "2000000000000001"


def test_meta_catalogs_fails_its_version_check_without_calling_meta(
    kobi_env, pg_instance, monkeypatch
) -> None:
    import dagster as dg

    monkeypatch.setenv("META_API_VERSION", "v24.0")
    pg_instance.add_dynamic_partitions("tenant", ["anatolia_home"])
    job = kobi_env.defs().resolve_implicit_global_asset_job_def()
    before = kobi_env.sandbox.admin.count_requests(route="catalog.get")
    result = job.execute_in_process(
        instance=pg_instance,
        partition_key="anatolia_home",
        asset_selection=[dg.AssetKey("meta_catalogs")],
        raise_on_error=False,
    )
    assert not result.success
    evals = [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    check = next(c for c in evals if c.check_name == "meta_api_version_supported")
    assert not check.passed and "v24.0 was retired by Meta on 2026-11-10" in check.description
    assert kobi_env.sandbox.admin.count_requests(route="catalog.get") == before
