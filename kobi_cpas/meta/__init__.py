"""Pure Meta Graph API client (no Dagster): errors, retries, paging, usage headers and redaction."""

from kobi_cpas.meta.client import MetaGraphClient, encode_params, strip_query_params
from kobi_cpas.meta.config import DEFAULT_API_VERSION, DEFAULT_BASE_URL, MetaClientConfig, MetaConfigError
from kobi_cpas.meta.errors import (
    ErrorKind,
    MetaAPIError,
    MetaAuthError,
    MetaConnectionError,
    MetaInvalidRequestError,
    MetaMalformedResponseError,
    MetaPagingError,
    MetaPermissionError,
    MetaRetryBudgetExceeded,
    MetaSegmentNotCompliantError,
    MetaThrottledError,
    MetaTooMuchDataError,
    MetaTransientError,
    classify,
    error_from_response,
)
from kobi_cpas.meta.redact import SecretRedactingFilter, redact
from kobi_cpas.meta.stats import ClientStats
from kobi_cpas.meta.usage import UsageSnapshot, parse_usage

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "ClientStats",
    "ErrorKind",
    "MetaAPIError",
    "MetaAuthError",
    "MetaClientConfig",
    "MetaConfigError",
    "MetaConnectionError",
    "MetaGraphClient",
    "MetaInvalidRequestError",
    "MetaMalformedResponseError",
    "MetaPagingError",
    "MetaPermissionError",
    "MetaRetryBudgetExceeded",
    "MetaSegmentNotCompliantError",
    "MetaThrottledError",
    "MetaTooMuchDataError",
    "MetaTransientError",
    "SecretRedactingFilter",
    "UsageSnapshot",
    "classify",
    "encode_params",
    "error_from_response",
    "parse_usage",
    "redact",
    "strip_query_params",
]
