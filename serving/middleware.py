"""The service's gateway, one ASGI middleware in front of every route: request id,
structured request log, body-size limit (413), authentication (401), per-caller rate limit
(429 with Retry-After, by the `limits` library), load shedding past a concurrency limit
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
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
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


class BodyTooLargeError(Exception):
    pass


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
        # Two counters per caller (this window and the last, weighted), not a moving
        # window's list of every hit: O(1) per request, and close to the moving window.
        self.limiter = SlidingWindowCounterRateLimiter(
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
        response = _ResponseWriter(send, scope, request_id)
        caller = "-"
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                caller = await self._handle(scope, receive, response, headers)
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
                caller=caller,
            )
            if scope["path"].startswith(PROTECTED_PREFIX):
                metrics.record_request(scope["path"], response.status, ms / 1000)
                self.alarms.observe(response.status, ms)

    async def _handle(
        self, scope: Scope, receive: Receive, response: _ResponseWriter, headers: dict[str, str]
    ) -> str:
        """Checks in order, then the route; returns the caller for the log."""
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            raise _too_large(self.max_body)
        if not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, self._limited(receive), response)
            return "-"
        principal = self.auth.authenticate(headers.get("authorization"), headers.get("x-api-key"))
        scope["state"]["principal"] = principal
        self._check_rate(principal.caller)
        if self.in_flight >= self.max_in_flight:
            raise OverloadedError(
                "too many requests in flight; retry shortly", {"Retry-After": "1"}
            )
        self.in_flight += 1
        try:
            await asyncio.wait_for(
                self.app(scope, self._limited(receive), response), timeout=self.timeout
            )
        except TimeoutError:
            if not response.started:
                raise TimedOutError(f"no answer within {self.timeout:g} s") from None
        except BodyTooLargeError:
            raise _too_large(self.max_body) from None
        finally:
            self.in_flight -= 1
        return principal.caller

    def _check_rate(self, caller: str) -> None:
        """RateLimitedError when `caller` is over the limit. When a shared storage (Redis)
        cannot be reached the request goes through, logged: a down counter store must
        not take the API down with it."""
        try:
            allowed = self.limiter.hit(self.rate, caller)
            if allowed:
                return
            reset, _ = self.limiter.get_window_stats(self.rate, caller)
        except Exception as exc:
            log.warning("rate limit storage unavailable; request allowed", error=str(exc))
            return
        wait = max(1, math.ceil(reset - time.time()))
        raise RateLimitedError(
            f"rate limit {self.rate} exceeded; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )

    def _limited(self, receive: Receive) -> Receive:
        """`receive` that stops a body growing past the limit (chunked uploads)."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLargeError
            return message

        return wrapped


def _too_large(limit: int) -> ServingError:
    return TooLargeError(f"request body larger than {limit} bytes")


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
            if self.status >= 400:
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
