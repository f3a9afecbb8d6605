"""Small Graph helpers shared by the CPAS modules (pure: they only need a MetaGraphClient-like object)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

from kobi_cpas.meta.errors import (
    UNKNOWN_OBJECT_SUBCODE,
    MetaAPIError,
    MetaInvalidRequestError,
    MetaRetryBudgetExceeded,
)
from kobi_cpas.meta.statuses import effective_statuses


class GraphClient(Protocol):
    """What the CPAS modules use of :class:`kobi_cpas.meta.MetaGraphClient`."""

    max_retries: int

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def post(
        self,
        path: str,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Any: ...


def status_filter(level: str, *, deleted: bool = True) -> list[str]:
    """The ``effective_status`` parameter of a campaigns/adsets/ads listing: every status ``level`` objects
    (campaign, adset, ad) can have (Meta refuses another level's values), DELETED ones only if asked. Without
    it Meta leaves archived and deleted objects out. The edge's own parameter, not ``filtering``: it is the
    one Meta's SDK defines for these edges."""
    return list(effective_statuses(level, deleted=deleted))


def is_missing(exc: BaseException) -> bool:
    """Meta's "Object with ID ... does not exist, cannot be loaded due to missing permissions" (100/33)."""
    return isinstance(exc, MetaInvalidRequestError) and (
        exc.error_subcode == UNKNOWN_OBJECT_SUBCODE or "does not exist" in exc.message
    )


def get_or_none(
    client: GraphClient, path: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """GET a node; None when Meta says it does not exist (or Kobi lost access to it)."""
    try:
        return client.get(path, params)
    except MetaAPIError as exc:
        if is_missing(exc):
            return None
        raise


def post_once(client: GraphClient, path: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """POST without the client's automatic retries.

    Creating POSTs (segments, campaigns, ...) are not idempotent: a timeout after Meta applied the call followed
    by a retry would create a duplicate. Callers look the object up again after a failure instead. The copy
    shares the client's session, stats and lock; only ``max_retries`` differs.
    """
    once = copy.copy(client)
    once.max_retries = 0
    try:
        return once.post(path, data=data)
    except MetaRetryBudgetExceeded as exc:
        raise exc.last_error from None  # no retry was attempted: surface the error itself
    finally:
        usage = getattr(once, "last_usage", None)
        if usage is not None and hasattr(client, "last_usage"):
            client.last_usage = usage  # keep pacing informed


def with_hint(exc: MetaAPIError, hint: str) -> MetaAPIError:
    """The same typed error with another fix hint (context such as the object ids)."""
    new = copy.copy(exc)
    new.hint = hint
    Exception.__init__(new, new._line())
    return new
