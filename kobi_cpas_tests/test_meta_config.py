"""Meta connection settings: environment, one definition of each default, and a masked token."""

from __future__ import annotations

import pytest

from kobi_cpas.meta import MetaClientConfig, MetaConfigError, MetaGraphClient
from kobi_cpas.meta.config import DEFAULT_BASE_URL, endpoint_from_env

TOKEN = "EAAconfigTOKENvalue999"


def test_from_env_defaults_and_masking() -> None:
    cfg = MetaClientConfig.from_env({"META_ACCESS_TOKEN": TOKEN})
    assert cfg.base_url == "https://graph.facebook.com"
    assert cfg.api_version == "v26.0"
    assert cfg.app_secret is None
    assert cfg.access_token.get_secret_value() == TOKEN
    for text in (repr(cfg), str(cfg), cfg.model_dump_json()):
        assert TOKEN not in text


def test_from_env_overrides() -> None:
    cfg = MetaClientConfig.from_env(
        {
            "META_ACCESS_TOKEN": TOKEN,
            "META_GRAPH_API_URL": "http://127.0.0.1:8765/",
            "META_API_VERSION": "v23.0",
            "META_APP_SECRET": "appsecret-xyz",
        }
    )
    assert cfg.base_url == "http://127.0.0.1:8765"
    assert cfg.api_version == "v23.0"
    assert "appsecret-xyz" not in repr(cfg)
    client = cfg.client(max_retries=1)
    try:
        assert isinstance(client, MetaGraphClient)
        assert client.base_url == "http://127.0.0.1:8765"
        assert client.appsecret_proof is not None
        assert TOKEN not in repr(client)
    finally:
        client.close()


def test_missing_token_names_the_variable() -> None:
    with pytest.raises(MetaConfigError, match="META_ACCESS_TOKEN"):
        MetaClientConfig.from_env({})


def test_bad_version_names_the_variable() -> None:
    with pytest.raises(MetaConfigError, match="META_API_VERSION") as info:
        MetaClientConfig.from_env({"META_ACCESS_TOKEN": TOKEN, "META_API_VERSION": "24"})
    assert TOKEN not in str(info.value)


def test_endpoint_from_env_leaves_unset_variables_to_the_defaults() -> None:
    assert endpoint_from_env({}) == {}
    assert endpoint_from_env({"META_GRAPH_API_URL": " ", "META_API_VERSION": ""}) == {}
    assert endpoint_from_env({"META_GRAPH_API_URL": "http://127.0.0.1:1", "META_API_VERSION": "v25.0"}) == {
        "base_url": "http://127.0.0.1:1",
        "api_version": "v25.0",
    }


def test_one_definition_of_each_meta_default() -> None:
    """The Dagster resource and the plain client config share the Graph URL and the version table's default."""
    from kobi_cpas.meta import versions
    from kobi_cpas.resources import MetaGraphResource

    resource = MetaGraphResource(access_token=TOKEN)
    cfg = MetaClientConfig.from_env({"META_ACCESS_TOKEN": TOKEN})
    assert resource.base_url == cfg.base_url == DEFAULT_BASE_URL
    assert resource.api_version == cfg.api_version == versions.DEFAULT_API_VERSION
    assert versions.DEFAULT_API_VERSION in versions.MARKETING_API_VERSIONS
    # the resource's client waits as long as a plain client: its defaults are the client's
    with (
        resource.get_client() as from_resource,
        MetaGraphClient(DEFAULT_BASE_URL, versions.DEFAULT_API_VERSION, TOKEN) as plain,
    ):
        knobs = ("timeout", "max_total_wait", "backoff_base", "throttle_backoff_base")
        assert [getattr(from_resource, k) for k in knobs] == [getattr(plain, k) for k in knobs]
    # the backoff scale shrinks both waits of the client, from the resource's own bases
    with MetaGraphResource(access_token=TOKEN, backoff_scale=0.5).get_client() as client:
        assert (client.backoff_base, client.throttle_backoff_base) == (
            resource.backoff_base_seconds * 0.5,
            resource.throttle_backoff_base_seconds * 0.5,
        )


def test_location_resources_take_the_environment_or_their_own_defaults(monkeypatch, tmp_path) -> None:
    """kobi_cpas/defs/resources.py is the one place reading the settings of every resource (assets, sensors and
    schedules get these same instances)."""
    from kobi_cpas.defs.resources import location_resources
    from kobi_cpas.resources import CatalogSyncResource, MetaGraphResource

    monkeypatch.setenv("KOBI_CPAS_DUCKDB_PATH", str(tmp_path / "k.duckdb"))
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(tmp_path / "tenants.yaml"))
    for var in (
        "META_GRAPH_API_URL",
        "META_API_VERSION",
        "META_APP_SECRET",
        "KOBI_CPAS_POLL_SECONDS",
        "KOBI_CPAS_STATUS_CHECK_SECONDS",
        "KOBI_CPAS_META_BACKOFF_SCALE",
    ):
        monkeypatch.delenv(var, raising=False)
    plain = location_resources()
    meta, sync = plain["meta"], plain["catalog_sync"]
    assert (meta.base_url, meta.api_version, meta.backoff_scale) == (
        DEFAULT_BASE_URL,
        MetaGraphResource.model_fields["api_version"].default,
        1.0,
    )
    defaults = CatalogSyncResource.model_fields
    assert sync.poll_interval_seconds == defaults["poll_interval_seconds"].default
    assert sync.status_check_seconds == defaults["status_check_seconds"].default
    assert plain["registry"].path == str(tmp_path / "tenants.yaml")
    assert plain["warehouse"].duckdb_path == str((tmp_path / "k.duckdb").resolve())

    monkeypatch.setenv("META_GRAPH_API_URL", "http://127.0.0.1:8765")
    monkeypatch.setenv("META_API_VERSION", "v25.0")
    monkeypatch.setenv("KOBI_CPAS_POLL_SECONDS", "0.5")
    monkeypatch.setenv("KOBI_CPAS_STATUS_CHECK_SECONDS", "30")
    monkeypatch.setenv("KOBI_CPAS_META_BACKOFF_SCALE", "0.001")
    tuned = location_resources()
    assert (tuned["meta"].base_url, tuned["meta"].api_version) == ("http://127.0.0.1:8765", "v25.0")
    assert tuned["meta"].backoff_scale == 0.001
    assert (tuned["catalog_sync"].poll_interval_seconds, tuned["catalog_sync"].status_check_seconds) == (
        0.5,
        30,
    )
