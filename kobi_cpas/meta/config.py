"""Connection settings for the Graph API client, read from the environment (the token is a SecretStr)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

if TYPE_CHECKING:
    from kobi_cpas.meta.client import MetaGraphClient

from kobi_cpas.meta.versions import DEFAULT_API_VERSION

DEFAULT_BASE_URL = "https://graph.facebook.com"
API_VERSION_RE = re.compile(r"^v\d+\.\d+$")


class MetaConfigError(ValueError):
    """Missing or invalid Meta connection settings; the message names the environment variable."""


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
            raise ValueError("META_GRAPH_API_URL must start with http:// or https://")
        return v

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, v: str) -> str:
        v = v.strip()
        if not API_VERSION_RE.match(v):
            raise ValueError("META_API_VERSION must look like 'v26.0'")
        return v

    @field_validator("access_token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("META_ACCESS_TOKEN is empty")
        return v

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetaClientConfig:
        env = os.environ if environ is None else environ
        token = env.get("META_ACCESS_TOKEN", "").strip()
        if not token:
            raise MetaConfigError(
                "META_ACCESS_TOKEN is not set: create a system-user token with ads_management, "
                "business_management and catalog_management and export it as META_ACCESS_TOKEN"
            )
        try:
            return cls(
                base_url=env.get("META_GRAPH_API_URL") or DEFAULT_BASE_URL,
                api_version=env.get("META_API_VERSION") or DEFAULT_API_VERSION,
                access_token=SecretStr(token),
                app_secret=SecretStr(env["META_APP_SECRET"]) if env.get("META_APP_SECRET") else None,
            )
        except ValueError as exc:  # pydantic ValidationError is a ValueError; its text never holds the token
            raise MetaConfigError(str(exc)) from None

    def client(self, **kwargs: Any) -> MetaGraphClient:
        from kobi_cpas.meta.client import MetaGraphClient

        return MetaGraphClient(
            base_url=self.base_url,
            api_version=self.api_version,
            access_token=self.access_token.get_secret_value(),
            app_secret=self.app_secret.get_secret_value() if self.app_secret else None,
            **kwargs,
        )
