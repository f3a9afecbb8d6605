"""Connection settings for the Graph API: the one definition of their defaults and environment variables.

The Dagster resource (``kobi_cpas.resources.MetaGraphResource``, built in ``kobi_cpas/defs/resources.py``) and
the plain client config below both take their defaults and overrides from here; the token is a SecretStr and,
in Dagster, an ``EnvVar`` so its value never reaches run config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.versions import DEFAULT_API_VERSION

DEFAULT_BASE_URL = "https://graph.facebook.com"
API_VERSION_RE = re.compile(r"^v\d+\.\d+$")

ENV_BASE_URL = "META_GRAPH_API_URL"
ENV_API_VERSION = "META_API_VERSION"
ENV_ACCESS_TOKEN = "META_ACCESS_TOKEN"
ENV_APP_SECRET = "META_APP_SECRET"

__all__ = [
    "API_VERSION_RE",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "ENV_ACCESS_TOKEN",
    "ENV_API_VERSION",
    "ENV_APP_SECRET",
    "ENV_BASE_URL",
    "MetaClientConfig",
    "MetaConfigError",
    "endpoint_from_env",
]


class MetaConfigError(ValueError):
    """Missing or invalid Meta connection settings; the message names the environment variable."""


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base_url`` and ``api_version`` as set in the environment; an unset or empty variable is left out, so
    the caller's own default (``DEFAULT_BASE_URL``, ``DEFAULT_API_VERSION``) applies."""
    env = os.environ if environ is None else environ
    out = {"base_url": env.get(ENV_BASE_URL, "").strip(), "api_version": env.get(ENV_API_VERSION, "").strip()}
    return {k: v for k, v in out.items() if v}


class MetaClientConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = DEFAULT_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    access_token: SecretStr
    app_secret: SecretStr | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{ENV_BASE_URL} must start with http:// or https://")
        return v

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, v: str) -> str:
        v = v.strip()
        if not API_VERSION_RE.match(v):
            raise ValueError(f"{ENV_API_VERSION} must look like '{DEFAULT_API_VERSION}'")
        return v

    @field_validator("access_token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError(f"{ENV_ACCESS_TOKEN} is empty")
        return v

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetaClientConfig:
        env = os.environ if environ is None else environ
        token = env.get(ENV_ACCESS_TOKEN, "").strip()
        if not token:
            raise MetaConfigError(
                f"{ENV_ACCESS_TOKEN} is not set: create a system-user token with ads_management, "
                f"business_management and catalog_management and export it as {ENV_ACCESS_TOKEN}"
            )
        try:
            return cls(
                **endpoint_from_env(env),
                access_token=SecretStr(token),
                app_secret=SecretStr(env[ENV_APP_SECRET]) if env.get(ENV_APP_SECRET) else None,
            )
        except ValueError as exc:  # pydantic ValidationError is a ValueError; its text never holds the token
            raise MetaConfigError(str(exc)) from None

    def client(self, **kwargs: Any) -> MetaGraphClient:
        return MetaGraphClient(
            base_url=self.base_url,
            api_version=self.api_version,
            access_token=self.access_token.get_secret_value(),
            app_secret=self.app_secret.get_secret_value() if self.app_secret else None,
            **kwargs,
        )
