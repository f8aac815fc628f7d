"""Alerts arrive at a real local HTTP endpoint: from a failed flow, a blocked data gate and a
refused promotion (each made to happen for real, as the ingest, validation and promotion
tests make them), through the webhook setting and through a saved Prefect notification
block; an alert that cannot be delivered never breaks its caller."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.pyfunc.model import PythonModel

from core.alerts import send_alert
from core.config import Settings, get_settings
from core.exceptions import ConfigError, DataValidationError
from pipelines.ingest import ingest_flow
from pipelines.train import train_flow
from prepiq.cli import main
from registry.aliases import CHAMPION, alias_version
from synthetic.generator import seed_source
from tests.alert_inbox import Inbox
from tests.conftest import END_DATE, migrated_engine
from tests.features.test_validation import AS_OF
from tests.registry.test_promotion import (  # noqa: F401  (module fixtures of the promotion tests)
    NAME,
    context,
    outcome,
    register,
    variants,
)
from training import tracking
from training.model_spec import Outcome, TrainingContext

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_an_alert_is_posted_as_json(alert_inbox: Inbox) -> None:
    assert send_alert("retraining_triggered", "drift on 3 features", {"psi": 0.4}) is True
    (alert,) = alert_inbox.received
    assert alert["event"] == "retraining_triggered"
    assert alert["summary"] == "drift on 3 features"
    assert alert["details"] == {"psi": 0.4}
    assert alert["source"] == "prepiq" and alert["sent_at"]


def test_an_undeliverable_alert_is_logged_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    refusing = Inbox(status=500)
    try:
        assert (
            send_alert("flow_failed", "x", settings=Settings(alert_webhook_url=refusing.url))
            is False
        )
        assert refusing.events() == ["flow_failed"]  # it arrived; the 500 makes it undelivered
    finally:
        refusing.close()
    closed = Settings(alert_webhook_url="http://127.0.0.1:1/alerts", alert_timeout_seconds=1)
    assert send_alert("flow_failed", "x", settings=closed) is False
    assert "alert webhook failed" in capsys.readouterr().err
    # Nothing configured: the alert is only logged.
    assert send_alert("flow_failed", "x", settings=Settings()) is True
    assert "flow_failed" in capsys.readouterr().err


def test_an_alert_goes_through_a_prefect_notification_block(
    alert_inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name="prepiq-ops",
        url=alert_inbox.url,
        json_data={"event": "{{subject}}", "text": "{{body}}"},
    ).save("prepiq-ops", overwrite=True)
    monkeypatch.delenv("PREPIQ_ALERT_WEBHOOK_URL")
    monkeypatch.setenv("PREPIQ_ALERT_BLOCK", "custom-webhook/prepiq-ops")
    get_settings.cache_clear()
    assert send_alert("data_gate_blocked", "gate failed", {"table": "tests"}) is True
    (alert,) = alert_inbox.received
    assert alert == {"event": "PrepIQ data_gate_blocked", "text": "gate failed\n\ntable: tests"}
    monkeypatch.setenv("PREPIQ_ALERT_BLOCK", "custom-webhook/no-such-block")
    get_settings.cache_clear()
    assert send_alert("data_gate_blocked", "gate failed") is False


def test_a_failed_flow_sends_an_alert(alert_inbox: Inbox) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        train_flow(models=["no-such-model"])
    (alert,) = alert_inbox.received
    assert alert["event"] == "flow_failed"
    assert alert["details"]["flow"] == "prepiq-train"
    assert "unknown model" in alert["details"]["message"]


def test_a_blocked_data_gate_sends_one_alert(
    alert_inbox: Inbox, sqlite_url: str, tmp_path: Path
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_source(
        engine, students=20, seed=4, days=90, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    stale = AS_OF + timedelta(days=60)  # the newest activity is two months old by then
    with pytest.raises(DataValidationError):
        ingest_flow(source_url=sqlite_url, data_dir=tmp_path / "data", as_of=stale)
    # The gate's own alert; the flow's failure hook does not repeat it.
    assert alert_inbox.events() == ["data_gate_blocked"]
    assert "expect_column_max_to_be_between" in alert_inbox.received[0]["summary"]
    assert alert_inbox.received[0]["details"]["report"].endswith("report.json")


@pytest.mark.usefixtures("small_data_params")
def test_a_refused_promotion_sends_an_alert(
    alert_inbox: Inbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    context: TrainingContext,  # noqa: F811
    outcome: Outcome,  # noqa: F811
    variants: dict[str, PythonModel],  # noqa: F811
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(context.data_dir))
    get_settings.cache_clear()
    tracking.configure()
    worse = register(outcome, variants["never_weak"])  # flags nothing: below the baselines
    assert main(["promote", "--model", "focus-area"]) == 3
    assert alias_version(MlflowClient(tracking_uri=uri, registry_uri=uri), NAME, CHAMPION) is None
    (alert,) = alert_inbox.received
    assert alert["event"] == "promotion_refused"
    assert alert["details"]["model"] == NAME
    assert alert["details"]["challenger_version"] == worse
    assert any("beats every baseline" in check for check in alert["details"]["failed_checks"])
