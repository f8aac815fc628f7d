"""Errors the service answers with, and the one JSON shape they all take
(`schemas.ErrorBody`): {"error": message, "code": kind, "field": name or null,
"request_id": id}. No stack trace ever reaches a caller."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

CODES_BY_STATUS = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "not_ready",
    504: "timeout",
}


class ServingError(Exception):
    """An answer other than success: status, machine-readable code, and the field at fault."""

    status = 400
    code = "invalid_input"

    def __init__(
        self, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}


class InvalidInputError(ServingError):
    """A request value the service cannot use (names the field)."""


REALM = "prepiq"


class UnauthorizedError(ServingError):
    """No credentials, or refused ones. Carries the RFC 6750 challenge: `error` is
    `invalid_token` for a refused token or key, `invalid_request` for a malformed
    Authorization header, and absent when no credential was sent."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class ForbiddenError(ServingError):
    status = 403
    code = "forbidden"


class NotFoundError(ServingError):
    """An unknown student, subject or route."""

    status = 404
    code = "not_found"


class NotReadyError(ServingError):
    """A model is not served: no champion, or its champion did not load (names it)."""

    status = 503
    code = "not_ready"


class ReloadFailedError(ServingError):
    """A reload could not serve some model's champion (names each and why); the models
    served before stay."""

    status = 503
    code = "reload_failed"


class SourceDownError(ServingError):
    """The source database cannot be reached: retry later (503, with Retry-After)."""

    status = 503
    code = "source_unavailable"


class RateLimitedError(ServingError):
    """Over the caller's rate limit (429, with Retry-After)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)


class OverloadedError(RateLimitedError):
    code = "overloaded"


class TimedOutError(ServingError):
    status = 504
    code = "timeout"


class TooLargeError(ServingError):
    status = 413
    code = "too_large"


class UnsupportedMediaTypeError(ServingError):
    """A request body in a media type the API does not read (names the header)."""

    status = 415
    code = "unsupported_media_type"


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    field: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The one error shape."""
    body = {
        "error": message,
        "code": code or CODES_BY_STATUS.get(status, "internal"),
        "field": field,
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def from_serving_error(exc: ServingError, request_id: str | None) -> JSONResponse:
    """The response for a raised ServingError."""
    return error_response(
        exc.status, exc.message, exc.code, exc.field, request_id, headers=exc.headers
    )


def _field_of(location: Any) -> str | None:
    """`topics.0.accuracy` from a pydantic/FastAPI error location (without the `body`/`path`
    prefix FastAPI adds)."""
    if not isinstance(location, list | tuple):
        return None
    parts = [str(p) for p in location if p not in ("body", "path", "query")]
    return ".".join(parts) or None


def normalise(status: int, body: bytes, request_id: str | None) -> JSONResponse:
    """Rewrite an error answered by a framework layer (BentoML's input validation,
    FastAPI's, Starlette's 404/405) into the one shape, keeping what it said."""
    ours = _ours(body)
    if ours is not None:  # a ServingError a view answered: keep its code (e.g. 503s differ)
        return error_response(
            status, str(ours.get("error")), ours.get("code"), ours.get("field"), request_id
        )
    message, field = _framework_message(status, body)
    return error_response(status, message, field=field, request_id=request_id)


def _ours(body: bytes) -> dict[str, Any] | None:
    """The body when it is already in the one error shape."""
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        return None
    if isinstance(data, list) and data:  # BentoML wraps some errors in a 1-tuple
        data = data[0]
    if isinstance(data, dict) and data.get("code") and "request_id" in data:
        return data
    return None


def _framework_message(status: int, body: bytes) -> tuple[str, str | None]:
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, list) and data:  # BentoML wraps some errors in a 1-tuple
        data = data[0]
    details = data.get("detail") if isinstance(data, dict) else None
    if isinstance(details, list) and details and isinstance(details[0], dict):
        first = details[0]
        field = _field_of(first.get("loc"))
        message = str(first.get("msg", "invalid value"))
        if field and first.get("type") == "missing":
            message = "field required"
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return (f"{field}: {message}{more}" if field else f"{message}{more}"), field
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"], None
    if isinstance(details, str):
        return details, None
    text = body.decode("utf-8", "replace").strip()
    if status == 404:
        return "no such route", None
    if status == 405:
        return "method not allowed on this route", None
    return text[:200] or "request failed", None
