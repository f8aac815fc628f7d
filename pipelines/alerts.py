"""The flows' alert hooks: a failed flow run, a refused promotion. Sending, and the
channels, are `core.alerts`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.alerts import send_alert
from core.exceptions import DataValidationError

if TYPE_CHECKING:
    from registry.promotion import PromotionResult

__all__ = ["alert_if_refused", "alert_on_failure", "send_alert"]


def alert_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect `on_failure` hook: sends `flow_failed` with the run and its error. A subflow
    stays quiet (its parent fails with it and alerts once), and so does a blocked data gate
    (the gate sent its own, more specific alert)."""
    if getattr(flow_run, "parent_task_run_id", None) is not None:
        return
    if isinstance(_failure(state), DataValidationError):
        return
    flow_name = getattr(flow, "name", str(flow))
    message = getattr(state, "message", None) or str(state)
    send_alert(
        "flow_failed",
        f"flow {flow_name} run {getattr(flow_run, 'name', '?')} failed: {message}",
        {
            "flow": flow_name,
            "flow_run_id": str(getattr(flow_run, "id", "")),
            "flow_run_name": getattr(flow_run, "name", None),
            "state": getattr(state, "name", None),
            "message": message,
        },
    )


def _failure(state: Any) -> BaseException | None:
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read back: not one we can classify
        return None
    return error if isinstance(error, BaseException) else None


def alert_if_refused(result: PromotionResult) -> bool:
    """Send `promotion_refused` when the gate refused a challenger (an absolute check
    failed: it is unfit to serve). A kept champion is the normal outcome: no alert."""
    if result.decision != "refused":
        return False
    report = result.report
    challenger = report.challenger.version if report and report.challenger else None
    return send_alert(
        "promotion_refused",
        f"{result.model}: challenger v{challenger} refused by the promotion gate; "
        f"champion stays {'v' + result.champion if result.champion else 'unset'}",
        {
            "model": result.model,
            "challenger_version": challenger,
            "champion_version": result.champion,
            "failed_checks": [
                r for r in (report.reasons() if report else []) if r.startswith("FAIL")
            ],
            "audit_run_id": result.audit_run_id,
        },
    )
