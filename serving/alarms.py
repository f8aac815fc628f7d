"""Serving errors alert, as the pipelines' failures do (`core.alerts`: the webhook and/or
the Prefect notification block): over a sliding window of the API's requests, a 5xx
share above `serving_alert_error_rate`, or a p99 above `serving_alert_p99_ms`, sends
`serving_errors` or `serving_latency` once when it starts and once when it clears (not
once per bad request). Each worker watches the requests it answers, so an alert names
its process. The rules in deploy/prometheus/ say the same over every worker and replica,
for a team that runs Prometheus.

The window keeps at most `MAX_REQUESTS` requests: past that rate the window is the last
`MAX_REQUESTS` requests, which is still minutes of a busy worker."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.alerts import send_alert
from core.config import Settings
from core.logging import get_logger

log = get_logger("prepiq.serving.alarms")
MAX_REQUESTS = 50_000
Sender = Callable[[str, str, Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Reading:
    """The window's figures at one check."""

    requests: int
    error_rate: float
    p99_ms: float


class ServingAlarms:
    """Watches each answered API request (`observe`, from the event loop) and checks the
    window every `check_seconds`; sending happens in a thread, off the request path."""

    def __init__(
        self,
        window_seconds: float,
        error_rate: float,
        p99_ms: float,
        min_requests: int,
        *,
        check_seconds: float | None = None,
        send: Sender = send_alert,
    ) -> None:
        self.window_seconds = window_seconds
        self.error_rate = error_rate
        self.p99_ms = p99_ms
        self.min_requests = min_requests
        # Often enough that an alarm starts within a tenth of its window.
        self.check_seconds = (
            min(5.0, window_seconds / 10) if check_seconds is None else check_seconds
        )
        self.send = send
        self.firing: set[str] = set()
        self._requests: deque[tuple[float, float, bool]] = deque(maxlen=MAX_REQUESTS)
        self._checked = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingAlarms:
        return cls(
            settings.serving_alert_window_seconds,
            settings.serving_alert_error_rate,
            settings.serving_alert_p99_ms,
            settings.serving_alert_min_requests,
        )

    def observe(self, status: int, ms: float) -> None:
        """One answered request: its status and how long it took."""
        now = time.monotonic()
        self._requests.append((now, ms, status >= 500))
        if now - self._checked >= self.check_seconds:
            self._checked = now
            self.check(now)

    def reading(self, now: float) -> Reading:
        """The window ending at `now` (monotonic seconds)."""
        while self._requests and self._requests[0][0] < now - self.window_seconds:
            self._requests.popleft()
        if not self._requests:
            return Reading(0, 0.0, 0.0)
        _, latencies, failed = zip(*self._requests, strict=True)
        return Reading(
            len(latencies),
            sum(failed) / len(failed),
            float(np.percentile(np.fromiter(latencies, float), 99)),
        )

    def check(self, now: float | None = None) -> Reading:
        """Compare the window with the budgets; alert on each alarm that starts or clears.
        Fewer than `min_requests` requests say nothing either way."""
        reading = self.reading(time.monotonic() if now is None else now)
        if reading.requests < self.min_requests:
            return reading
        self._transition(
            "serving_errors",
            reading.error_rate > self.error_rate,
            f"{reading.error_rate:.1%} of requests answered 5xx (budget {self.error_rate:.1%})",
            reading,
        )
        self._transition(
            "serving_latency",
            reading.p99_ms > self.p99_ms,
            f"p99 latency {reading.p99_ms:.0f} ms (budget {self.p99_ms:.0f} ms)",
            reading,
        )
        return reading

    def _transition(self, event: str, bad: bool, what: str, reading: Reading) -> None:
        if bad == (event in self.firing):
            return
        (self.firing.add if bad else self.firing.discard)(event)
        state = "firing" if bad else "resolved"
        summary = f"serving worker {os.getpid()}: {what} over the last {self.window_seconds:g} s"
        details = {
            "state": state,
            "pid": os.getpid(),
            "window_seconds": self.window_seconds,
            "requests": reading.requests,
            "error_rate": round(reading.error_rate, 4),
            "p99_ms": round(reading.p99_ms, 1),
        }
        log.warning("serving alarm", alarm=event, state=state, summary=summary)
        threading.Thread(
            target=self.send,
            args=(event, summary if bad else f"resolved: {summary}", details),
            name=f"alarm-{event}",
            daemon=True,
        ).start()
