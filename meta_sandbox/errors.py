"""Meta-shaped errors the sandbox answers with: ``{"error": {message, type, code, error_subcode, ...}}``."""

from __future__ import annotations

from typing import Any

GRAPH_DOCS = "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"


class GraphError(Exception):
    """Raised by handlers and faults; the server turns it into Meta's error body and HTTP status."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        type: str = "OAuthException",
        subcode: int | None = None,
        status: int = 400,
        is_transient: bool = False,
        user_title: str | None = None,
        user_msg: str | None = None,
        headers: dict[str, str] | None = None,
        usage_pct: float | None = None,
        regain_minutes: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.type = type
        self.subcode = subcode
        self.status = status
        self.is_transient = is_transient
        self.user_title = user_title
        self.user_msg = user_msg
        self.headers = headers or {}
        # Throttling answers carry usage headers at this percentage and estimated_time_to_regain_access.
        self.usage_pct = usage_pct
        self.regain_minutes = regain_minutes

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        err["is_transient"] = self.is_transient
        if self.user_title:
            err["error_user_title"] = self.user_title
        if self.user_msg:
            err["error_user_msg"] = self.user_msg
        err["fbtrace_id"] = fbtrace_id
        return {"error": err}


# HTTP status for token errors: the Graph API answers OAuthException 190 with HTTP 400 (and a
# WWW-Authenticate header); 401 is used by some other Meta endpoints, so the sandbox follows the Graph API.
AUTH_STATUS = 400


def _www_authenticate(detail: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{detail}"'}


def missing_token() -> GraphError:
    msg = "An active access token must be used to query information about the current user."
    return GraphError(190, msg, status=AUTH_STATUS, headers=_www_authenticate(msg))


def expired_token() -> GraphError:
    msg = "Error validating access token: Session has expired"
    return GraphError(190, msg, subcode=463, status=AUTH_STATUS, headers=_www_authenticate(msg))


def invalid_token() -> GraphError:
    msg = "Invalid OAuth access token - Cannot parse access token"
    return GraphError(190, msg, status=AUTH_STATUS, headers=_www_authenticate(msg))


def malformed_token(token: str) -> GraphError:
    # Meta really echoes the token here, which is why clients must scrub error messages.
    msg = f"Malformed access token {token}"
    return GraphError(190, msg, status=AUTH_STATUS, headers=_www_authenticate("Malformed access token"))


def permission_error(permission: str = "business_management") -> GraphError:
    return GraphError(200, f"(#200) Requires {permission} permission to manage the object", status=403)


def invalid_parameter(detail: str | None = None, subcode: int | None = None) -> GraphError:
    return GraphError(100, f"(#100) {detail}" if detail else "(#100) Invalid parameter", subcode=subcode)


def unknown_object(obj_id: str, method: str = "GET") -> GraphError:
    return GraphError(
        100,
        f"Unsupported {method.lower()} request. Object with ID '{obj_id}' does not exist, cannot be loaded due "
        f"to missing permissions, or does not support this operation. {GRAPH_DOCS}",
        type="GraphMethodException",
        subcode=33,
    )


def version_retired(newest: str) -> GraphError:
    # Meta's text for a retired Marketing API version (the "Ads API" in its wording).
    return GraphError(
        2635,
        f"(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: {newest}.",
    )


def unknown_path(path: str) -> GraphError:
    return GraphError(2500, f"Unknown path components: {path}")


def nonexisting_field(field_name: str, node_type: str) -> GraphError:
    return GraphError(
        100, f"(#100) Tried accessing nonexisting field ({field_name}) on node type ({node_type})"
    )


def invalid_appsecret_proof() -> GraphError:
    return GraphError(
        100, "Invalid appsecret_proof provided in the API argument", type="GraphMethodException"
    )


def missing_appsecret_proof() -> GraphError:
    return GraphError(
        100, "API calls from the server require an appsecret_proof argument", type="GraphMethodException"
    )


def unknown_error(code: int = 1, status: int = 500) -> GraphError:
    if code == 2:
        msg = "An unexpected error has occurred. Please retry your request later."
    else:
        msg = "An unknown error occurred"
    return GraphError(code, msg, status=status, is_transient=True)
