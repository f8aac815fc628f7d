"""The serving alarms (serving.alarms): a 5xx share or a p99 past its budget over the
window alerts through the platform's channels (here the webhook, a local inbox), once
when it starts and once when it clears."""

from __future__ import annotations

import os
import time

from core.config import get_settings
from serving.alarms import ServingAlarms
from tests.alert_inbox import Inbox


def alarms() -> ServingAlarms:
    # Checked only when the test says (check_seconds far away), on the real sender.
    return ServingAlarms(60, error_rate=0.05, p99_ms=500, min_requests=20, check_seconds=1e9)


def delivered(inbox: Inbox, count: int) -> list[dict[str, object]]:
    """The inbox once `count` alerts arrived (the sender runs in its own thread)."""
    deadline = time.monotonic() + 10
    while len(inbox.received) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(inbox.received) == count, inbox.received
    return inbox.received


def test_a_5xx_share_past_budget_alerts_once_and_again_when_it_clears(
    alert_inbox: Inbox,
) -> None:
    watch = alarms()
    for _ in range(19):
        watch.observe(503, 10)
    watch.check()  # 19 requests: too few to say anything
    assert watch.firing == set()
    for status in [200] * 89 + [500] * 1:  # 20 of 109 failed
        watch.observe(status, 10)
    first = watch.check()
    assert first.requests == 109 and abs(first.error_rate - 20 / 109) < 1e-9
    assert watch.firing == {"serving_errors"}
    watch.check()  # still firing: no second alert
    alert = delivered(alert_inbox, 1)[0]
    assert alert["event"] == "serving_errors"
    assert "18.3% of requests answered 5xx (budget 5.0%)" in str(alert["summary"])
    assert alert["details"] == {
        "state": "firing",
        "pid": os.getpid(),  # the worker that watched
        "window_seconds": 60,
        "requests": 109,
        "error_rate": 0.1835,
        "p99_ms": 10.0,
    }
    for _ in range(400):
        watch.observe(200, 10)
    watch.check()  # 20 of 509: 3.9%
    assert watch.firing == set()
    resolved = delivered(alert_inbox, 2)[1]
    assert resolved["event"] == "serving_errors"
    assert str(resolved["summary"]).startswith("resolved: ")


def test_client_errors_never_alert_and_a_slow_p99_does(alert_inbox: Inbox) -> None:
    watch = alarms()
    for _ in range(100):
        watch.observe(429, 1)  # the callers' fault, not the service's
    for _ in range(100):
        watch.observe(404, 1)
    assert watch.check().error_rate == 0 and watch.firing == set()
    for _ in range(5):  # 5 of 205 slow: past the 99th percentile
        watch.observe(200, 2_000)
    assert watch.check().p99_ms > 500
    assert watch.firing == {"serving_latency"}
    assert [a["event"] for a in delivered(alert_inbox, 1)] == ["serving_latency"]


def test_the_window_forgets_old_requests() -> None:
    sent: list[str] = []

    def send(event: str, summary: str, details: object) -> bool:
        sent.append(event)
        return True

    watch = ServingAlarms(60, 0.05, 500, 20, check_seconds=1e9, send=send)
    for _ in range(50):
        watch.observe(500, 10)
    now = time.monotonic()
    assert watch.reading(now).requests == 50
    assert watch.reading(now + 61).requests == 0  # all older than the window
    assert watch.check(now + 61).requests == 0 and sent == []


def test_the_settings_give_the_budgets() -> None:
    settings = get_settings()
    watch = ServingAlarms.from_settings(settings)
    assert watch.error_rate == settings.serving_alert_error_rate == 0.05
    assert watch.p99_ms == settings.serving_alert_p99_ms
    assert watch.check_seconds == 5.0  # a tenth of the 300 s window, at most 5 s
