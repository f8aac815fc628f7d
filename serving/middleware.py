"""The service's gateway, one ASGI middleware in front of every route: request id,
structured request log, body-size limit (413, by Content-Length or as the body streams in),
authentication (401 with a `WWW-Authenticate` challenge), a JSON-only request body (415),
per-caller rate limit (429 with Retry-After, by the `limits` library; callers with no valid
credentials are counted by client address), load shedding past a concurrency limit
(429), a per-request timeout (504), and one JSON error shape for every error, whichever
layer raised it (this gateway, the service, BentoML's or FastAPI's input validation,
Starlette's router). Nothing but that shape, and never a stack trace, reaches a caller.

Why one middleware and not a stack: the order matters (the request id must exist before
anything can fail, errors of every later step must be reshaped) and is clearest read top
to bottom in one `__call__`."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import STRATEGIES
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from core.logging import get_logger
from serving import metrics
from serving.alarms import ServingAlarms
from serving.errors import (
    OverloadedError,
    RateLimitedError,
    ServingError,
    TimedOutError,
    TooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    error_response,
    from_serving_error,
    normalise,
)
from serving.security import Authenticator

log = get_logger("prepiq.serving.requests")
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PROTECTED_PREFIX = "/api/"  # health, readiness, metrics and the API docs stay open
ERROR_KEY = "serving_error"  # where the service leaves a ServingError for this gateway
TOO_LARGE_KEY = "body_too_large"  # the limit, once a streamed body passed it
CALLER_KEY = "caller"  # who is calling, for the request log line (`-` before it is known)
BODY_METHODS = ("POST", "PUT", "PATCH")


class Gateway:
    """See the module docstring. Options come from the settings."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body = settings.serving_max_body_bytes
        self.timeout = settings.serving_request_timeout_seconds
        self.max_in_flight = settings.serving_max_concurrency
        self.in_flight = 0
        self.alarms = ServingAlarms.from_settings(settings)
        self.auth = Authenticator(settings)
        self.rate = parse(settings.serving_rate_limit)
        self.anonymous_rate = parse(settings.serving_anonymous_rate_limit)
        self.limiter = STRATEGIES[settings.serving_rate_limit_strategy](
            storage_from_string(settings.serving_rate_limit_storage)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state[CALLER_KEY] = "-"
        response = _ResponseWriter(send, scope, request_id)
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self._handle(scope, receive, response, headers)
            except ServingError as exc:
                await response.send_error(from_serving_error(exc, request_id))
            except Exception:
                log.error("unhandled error", path=scope["path"], exc_info=True)
                await response.send_error(
                    error_response(500, "internal error", request_id=request_id)
                )
            ms = 1000 * (time.perf_counter() - started)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=response.status,
                ms=round(ms, 2),
                caller=state[CALLER_KEY],  # a 429's line names whom it limited
            )
            if scope["path"].startswith(PROTECTED_PREFIX):
                metrics.record_request(scope["path"], response.status, ms / 1000)
                self.alarms.observe(response.status, ms)

    async def _handle(
        self, scope: Scope, receive: Receive, response: _ResponseWriter, headers: dict[str, str]
    ) -> None:
        """Checks in order, then the route; leaves the caller in the scope for the log."""
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            raise _too_large(self.max_body)
        if not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, self._limited(receive, scope), response)
            return
        state = scope["state"]
        try:
            principal = self.auth.authenticate(
                headers.get("authorization"), headers.get("x-api-key")
            )
        except UnauthorizedError:
            # Refused requests count against their address, so guessing keys or tokens
            # (or flooding with none) meets a 429 too; authenticated callers are unaffected.
            state[CALLER_KEY] = _anonymous(scope)
            self._check_rate(self.anonymous_rate, state[CALLER_KEY])
            raise
        state["principal"] = principal
        state[CALLER_KEY] = principal.caller
        self._check_rate(self.rate, principal.caller)
        if scope["method"] in BODY_METHODS:
            _require_json(scope)
        if self.in_flight >= self.max_in_flight:
            raise OverloadedError(
                "too many requests in flight; retry shortly", {"Retry-After": "1"}
            )
        self.in_flight += 1
        try:
            await asyncio.wait_for(
                self.app(scope, self._limited(receive, scope), response), timeout=self.timeout
            )
        except TimeoutError:
            if not response.started:
                raise TimedOutError(f"no answer within {self.timeout:g} s") from None
        finally:
            self.in_flight -= 1

    def _check_rate(self, rate: RateLimitItem, caller: str) -> None:
        """RateLimitedError when `caller` is over the limit. When a shared storage (Redis)
        cannot be reached the request goes through, logged: a down counter store must
        not take the API down with it."""
        try:
            allowed = self.limiter.hit(rate, caller)
            if allowed:
                return
            reset, _ = self.limiter.get_window_stats(rate, caller)
        except Exception as exc:
            log.warning("rate limit storage unavailable; request allowed", error=str(exc))
            return
        wait = max(1, math.ceil(reset - time.time()))
        raise RateLimitedError(
            f"rate limit {rate} exceeded; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )

    def _limited(self, receive: Receive, scope: Scope) -> Receive:
        """`receive` that stops a body growing past the limit (chunked uploads, with no
        Content-Length to refuse up front). The flag in the scope makes the answer a 413
        whatever the app then does with the error (BentoML turns it into a 500)."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    scope["state"][TOO_LARGE_KEY] = self.max_body
                    # A client error: BentoML's log filter (serving.service) keeps its
                    # traceback out of the log.
                    raise _too_large(self.max_body)
            return message

        return wrapped


def _too_large(limit: int) -> ServingError:
    return TooLargeError(f"request body larger than {limit} bytes")


def _anonymous(scope: Scope) -> str:
    """Rate-limit key of a caller with no valid credentials: its client address."""
    client = scope.get("client")
    return f"anon:{client[0] if client else 'unknown'}"


def is_json(content_type: str) -> bool:
    """`application/json` or a `+json` type, whatever its parameters and case."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _require_json(scope: Scope) -> None:
    """UnsupportedMediaTypeError unless every Content-Type header given is JSON. The APIs
    read JSON bodies only; BentoML would parse a multipart or form body itself (and fail
    with a 500 on one without a boundary). Every header is checked, not the last one:
    the framework reads the first. None at all is read as JSON."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-type" and not is_json(value.decode("latin-1")):
            raise UnsupportedMediaTypeError(
                f"Content-Type: {value.decode('latin-1')[:100]!r} is not accepted; "
                "send application/json",
                field="Content-Type",
            )


class _ResponseWriter:
    """`send` that adds the request id header and reshapes error responses: an error's
    start and body are held back until complete, then sent in the one error shape."""

    def __init__(self, send: Send, scope: Scope, request_id: str) -> None:
        self._send = send
        self._scope = scope
        self.request_id = request_id
        self.status = 0
        self.started = False
        self._held: Message | None = None
        self._body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            if self.status >= 400 or self._scope["state"].get(TOO_LARGE_KEY):
                self._held = message
                return
            message["headers"] = [*message.get("headers", []), self._id_header()]
            self.started = True
            await self._send(message)
            return
        if message["type"] == "http.response.body" and self._held is not None:
            self._body += message.get("body", b"")
            if not message.get("more_body", False):
                await self.send_error(self._reshaped())
            return
        await self._send(message)

    def _id_header(self) -> tuple[bytes, bytes]:
        return (REQUEST_ID_HEADER.lower().encode(), self.request_id.encode())

    def _reshaped(self) -> Any:
        if self._scope["state"].get(TOO_LARGE_KEY):
            return from_serving_error(
                _too_large(self._scope["state"][TOO_LARGE_KEY]), self.request_id
            )
        stashed = self._scope.get("state", {}).get(ERROR_KEY)
        if isinstance(stashed, ServingError):
            return from_serving_error(stashed, self.request_id)
        held = self._held or {}
        response = normalise(self.status, bytes(self._body), self.request_id)
        for name, value in held.get("headers", []):
            if name.lower() in (b"retry-after", b"www-authenticate", b"allow"):
                response.raw_headers.append((name, value))
        return response

    async def send_error(self, response: Any) -> None:
        """Send an error response in the one shape (only if nothing was sent yet)."""
        if self.started:
            return
        self._held = None
        self.status = response.status_code
        response.raw_headers.append(self._id_header())
        self.started = True
        await response({"type": "http"}, _no_body, self._send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
