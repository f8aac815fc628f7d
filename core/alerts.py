"""Alerts to operators: a failed flow, a blocked data gate, a refused promotion, a
triggered retraining (pipelines.alerts hooks them to the flows), and a serving process's
5xx rate or p99 past its budget (serving.alarms).

An alert goes to a webhook (`PREPIQ_ALERT_WEBHOOK_URL`, a JSON POST) and/or through a
Prefect notification block (`PREPIQ_ALERT_BLOCK`, e.g. `slack-webhook/ops`), whichever
are configured; with neither it is only logged. Sending never raises: an alert that
cannot be delivered is logged and reported as False, so it can never turn a handled
situation into a crash of the flow that raised it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import httpx

from core.config import Settings, get_settings
from core.logging import get_logger
from core.security import redact_url

AlertEvent = Literal[
    "flow_failed",
    "data_gate_blocked",
    "promotion_refused",
    "retraining_triggered",
    "serving_errors",
    "serving_latency",
]
EVENTS: Final[frozenset[str]] = frozenset(get_args(AlertEvent))

_log = get_logger("prepiq.alerts")


def alert_payload(
    event: str, summary: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of an alert: what happened, when, where, and event-specific details."""
    return {
        "source": "prepiq",
        "event": event,
        "summary": summary,
        "details": dict(details or {}),
        "host": socket.gethostname(),
        "sent_at": datetime.now(UTC).isoformat(),
    }


def send_alert(
    event: str,
    summary: str,
    details: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
) -> bool:
    """Send an alert to every configured channel. True when each took it (or none is
    configured and it was only logged); False when a delivery failed. Never raises."""
    try:
        settings = settings or get_settings()
        if event not in EVENTS:
            _log.warning("alert with an unknown event name", alert_event=event)
        payload = alert_payload(event, summary, details)
        _log.warning("alert", alert_event=event, summary=summary, details=payload["details"])
        delivered = []
        if settings.alert_webhook_url:
            delivered.append(_post_webhook(settings.alert_webhook_url, payload, settings))
        if settings.alert_block:
            delivered.append(_notify_block(settings.alert_block, payload))
        return all(delivered)
    except Exception as exc:  # an alert must never break its caller
        _log.error("alert failed", alert_event=event, error=f"{type(exc).__name__}: {exc}")
        return False


def _post_webhook(url: str, payload: dict[str, Any], settings: Settings) -> bool:
    try:
        response = httpx.post(url, json=payload, timeout=settings.alert_timeout_seconds)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        _log.error(
            "alert webhook failed",
            alert_event=payload["event"],
            url=redact_url(url),
            error=f"{type(exc).__name__}: {exc}",
        )
        return False
    return True


def _notify_block(name: str, payload: dict[str, Any]) -> bool:
    """Send through a saved Prefect notification block (`<block-type-slug>/<name>`)."""
    # lazy: serving's 5xx alarm sends alerts too, and the serving process loads no Prefect
    from prefect.blocks.core import Block  # noqa: PLC0415

    try:
        # `_sync=True`: the hook may run inside an event loop, where Prefect would
        # otherwise hand back a coroutine nobody awaits.
        block: Any = Block.load(name, _sync=True)  # type: ignore[call-arg]
        details = "\n".join(f"{key}: {value}" for key, value in payload["details"].items())
        block.notify(
            body=f"{payload['summary']}\n\n{details}".strip(),
            subject=f"PrepIQ {payload['event']}",
            _sync=True,
        )
    except Exception as exc:
        _log.error(
            "alert notification block failed",
            alert_event=payload["event"],
            block=name,
            error=f"{type(exc).__name__}: {exc}",
        )
        return False
    return True
