"""Whether the source database answers, for `/readyz` and for requests that read it.

A request whose read fails to reach the source answers 503 `source_unavailable` with
Retry-After (not a 500: the caller's request was fine and will work again), and marks the
source down at once. `/readyz` is not ready while the source is down: it reuses a check
for `check_seconds`, so a load balancer polling it costs the database one `SELECT 1` per
interval and worker, and only one check runs at a time (the others read the last verdict).
A pool's stale connections are replaced by the engine's pre-ping, so recovery needs
nothing but the database's return."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from core.database import check_connection, describe_host, error_reason
from core.exceptions import SourceUnavailableError
from core.logging import get_logger
from serving.errors import SourceDownError

log = get_logger("prepiq.serving.source")
T = TypeVar("T")
RETRY_AFTER_SECONDS = 5
# What a lost, refused or exhausted connection raises (a bad query is a ProgrammingError
# or DataError, and stays a bug to see, not an outage to wait out).
UNREACHABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # the pool's: every connection busy past pool_timeout
    SourceUnavailableError,
)


@dataclass(frozen=True)
class SourceState:
    """The last verdict: reachable or not, why not, and when it was reached."""

    reachable: bool
    reason: str | None
    checked_at: datetime


class SourceHealth:
    """The source's reachability, checked at most every `check_seconds`."""

    def __init__(self, engine: Engine, check_seconds: float) -> None:
        self.engine = engine
        self.check_seconds = check_seconds
        self._checking = threading.Lock()
        self._state = SourceState(True, None, datetime.now(UTC))
        self._checked = float("-inf")  # monotonic time of the last verdict

    @property
    def state(self) -> SourceState:
        """The last verdict, without checking."""
        return self._state

    def fresh(self) -> SourceState | None:
        """The last verdict while younger than `check_seconds`, else None (no I/O: the
        event loop asks this first and goes to a thread only for a check)."""
        return self._state if time.monotonic() - self._checked < self.check_seconds else None

    def current(self) -> SourceState:
        """The verdict, checked again when older than `check_seconds` (blocking: call it
        from a thread). While another thread checks, the last verdict is the answer."""
        fresh = self.fresh()
        if fresh is not None:
            return fresh
        if not self._checking.acquire(blocking=False):
            return self._state
        try:
            check_connection(self.engine)
        except SourceUnavailableError as exc:
            self._set(False, str(exc))
        except UNREACHABLE as exc:
            self._set(False, self._describe(exc))
        else:
            self._set(True, None)
        finally:
            self._checking.release()
        return self._state

    def call(self, read: Callable[[], T]) -> T:
        """`read()`, with a lost source turned into a 503 (and the source marked down)."""
        try:
            result = read()
        except UNREACHABLE as exc:
            reason = self._describe(exc)
            self._set(False, reason)
            raise SourceDownError(
                f"source database unavailable: {reason}",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from exc
        if not self._state.reachable:
            self._set(True, None)
        return result

    def _describe(self, exc: BaseException) -> str:
        return f"cannot reach {describe_host(self.engine.url)}: {error_reason(exc)}"

    def _set(self, reachable: bool, reason: str | None) -> None:
        was = self._state.reachable
        self._state = SourceState(reachable, reason, datetime.now(UTC))
        self._checked = time.monotonic()
        if was and not reachable:
            log.error("source database unreachable", reason=reason)
        elif reachable and not was:
            log.info("source database reachable again")
