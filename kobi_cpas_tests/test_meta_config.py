"""MetaClientConfig: environment, defaults and a masked token."""

from __future__ import annotations

import pytest

from kobi_cpas.meta import MetaClientConfig, MetaConfigError, MetaGraphClient

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
