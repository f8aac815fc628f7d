"""The monitoring flow on a copy of the small seeded source. Served predictions are
written into `model_predictions` as the service writes them; with the source as the
training snapshot saw it nothing drifts and nothing retrains; after a deliberate shift of
the served students' recent answers (mostly wrong, three times slower) drift and the live
weak-topic F1 cross their thresholds and a real training run (the focus-area model, one
Optuna trial) runs, the decision is recorded in MLflow and an alert reaches a local
webhook. No mocks: the served responses come from stand-ins for the models (documented
below) because the test is of the monitor, not of a model."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import Engine, Table, insert, update

from core.config import PROJECT_ROOT, load_params
from features.focus import topic_test_stats
from features.frames import SourceFrames, from_snapshot
from features.schema import ModelPrediction, TestAnswer
from features.snapshot import RAW_DIR, read_manifest
from features.store import FEATURES_DIR, TABLES, build_feature_tables
from tests.alert_inbox import Inbox
from training.progress_forecaster.data import inputs_at
from training.progress_forecaster.evaluation import recent_slope
from training.progress_forecaster.params import ProgressForecasterParams

SERVED_STUDENTS = 150
HORIZONS = (30, 60)  # the small source's forecaster horizons (synthetic.small_source)
WEAK_THRESHOLD = 0.5


@dataclass
class Monitored:
    """A private copy of the seeded source and of the training snapshot."""

    url: str
    engine: Engine
    data_dir: Path
    as_of: datetime
    students: list[str]


@pytest.fixture
def monitored(
    seeded_sqlite: tuple[Engine, Path],
    clean_snapshot: Path,
    small_data_params: Path,
    tmp_path: Path,
) -> Iterator[Monitored]:
    """The source copied (tests change it), the snapshot with its feature tables, and
    the predictions the service made: recent ones (drift) and ones whose outcome arrived."""
    from core.database import get_engine

    source = tmp_path / "source.db"
    shutil.copy(str(seeded_sqlite[0].url.database), source)
    data_dir = tmp_path / "data"
    shutil.copytree(clean_snapshot, data_dir / RAW_DIR)
    manifest = read_manifest(data_dir / RAW_DIR)
    assert manifest is not None
    as_of = datetime.fromisoformat(manifest.as_of)
    build_feature_tables(data_dir / RAW_DIR, data_dir / FEATURES_DIR, as_of)
    url = f"sqlite:///{source}"
    engine = get_engine(url)
    frames = from_snapshot(data_dir / RAW_DIR, TABLES)
    users = sorted(frames["users"]["id"])
    students = users[:: max(1, len(users) // SERVED_STUDENTS)][:SERVED_STUDENTS]
    rows = []
    for moment in (as_of - timedelta(days=2), as_of - timedelta(days=40)):
        rows += focus_predictions(frames.for_users(students), moment)
    for moment in (as_of - timedelta(days=2), as_of - timedelta(days=65)):
        rows += progress_predictions(frames.for_users(students), moment)
    rows += [  # what was recommended does not matter to drift: who asked does
        prediction_row("prepiq-topic-recommender", user, as_of - timedelta(days=3), {})
        for user in students
    ]
    with engine.begin() as conn:
        conn.execute(insert(ModelPrediction), rows)
    yield Monitored(url, engine, data_dir, as_of, students)
    engine.dispose()


def prediction_row(
    model: str, user: str, moment: datetime, response: dict[str, object]
) -> dict[str, object]:
    return {
        "model_name": model,
        "model_version": "1",
        "user_id": user,
        "request_id": uuid.uuid4().hex,
        "inputs_digest": uuid.uuid4().hex,
        "request": {"user_id": user},
        "response": response,
        "latency_ms": 5.0,
        "created_at": moment,
    }


def focus_predictions(frames: SourceFrames, moment: datetime) -> list[dict[str, object]]:
    """Weak flags as of `moment` from the student's own recent accuracy on the topic (a
    stand-in for the model: the test is of the monitor, not of a model)."""
    stats = topic_test_stats(frames, moment)
    rows = []
    for user, topics in stats.groupby("user_id"):
        level = topics["recency_weighted_accuracy"].tolist()
        areas = [
            {
                "topic_id": int(topic),
                "weak_probability": 1.0 - accuracy,
                "is_weak": accuracy < WEAK_THRESHOLD,
            }
            for topic, accuracy in zip(topics["topic_id"].tolist(), level, strict=True)
        ]
        rows.append(
            prediction_row(
                "prepiq-focus-area", str(user), moment, {"user_id": user, "focus_areas": areas}
            )
        )
    return rows


def progress_predictions(frames: SourceFrames, moment: datetime) -> list[dict[str, object]]:
    """Forecasts as of `moment` from the recent-slope baseline, with a +-5 point interval."""
    p = ProgressForecasterParams.from_params(load_params(PROJECT_ROOT / "params.yaml")).replaced(
        horizons_days=HORIZONS, window_days=28
    )
    examples = inputs_at(frames, moment, p)
    point = recent_slope(examples, HORIZONS, p.slope_days)
    rows = []
    for user, forecast in zip(examples.user_id, point, strict=True):
        forecasts = [
            {
                "horizon_days": h,
                "completion_percent": float(v),
                "low_percent": float(max(v - 5, 0)),
                "high_percent": float(min(v + 5, 100)),
            }
            for h, v in zip(HORIZONS, forecast, strict=True)
        ]
        rows.append(
            prediction_row(
                "prepiq-progress-forecaster",
                str(user),
                moment,
                {"user_id": user, "forecasts": forecasts},
            )
        )
    return rows


def shift_recent_answers(m: Monitored, days: int) -> None:
    """The served students' answers of the last `days` days: nine in ten wrong and three
    times slower (as if the exam board had changed the questions under them)."""
    since = m.as_of - timedelta(days=days)
    table = TestAnswer.__table__
    assert isinstance(table, Table)
    with m.engine.begin() as conn:
        ids = (
            conn.execute(
                table.select()
                .with_only_columns(table.c.id)
                .where(table.c.user_id.in_(m.students), table.c.answered_at > since)
            )
            .scalars()
            .all()
        )
        wrong = [i for i in ids if i % 10]
        conn.execute(
            update(table)
            .where(table.c.id.in_(ids))
            .values(time_taken_seconds=table.c.time_taken_seconds * 3)
        )
        conn.execute(update(table).where(table.c.id.in_(wrong)).values(is_correct=False))


def write_params(m: Monitored, params_file: Path, **monitoring: object) -> None:
    """The small-source params with the monitoring knobs of this test: the stand-in weak
    flags (recency-weighted accuracy below 0.5) reach F1 0.61 on unshifted data, below the
    real model's (0.8-0.86 on the hold-out), so their floor is 0.45 here, not 0.6."""
    params = yaml.safe_load(params_file.read_text())
    params["monitoring"].update(focus_area_min_f1=0.45, **monitoring)
    params_file.write_text(yaml.safe_dump(params))


def monitoring_run(run_id: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Tags, params and artifact paths of a monitoring run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    artifacts += [a.path for a in client.list_artifacts(run_id, "plots")]
    return run.data.tags, run.data.params, artifacts


def test_unshifted_serving_does_not_retrain(
    monitored: Monitored,
    prefect_harness: None,
    small_data_params: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through `prepiq monitor` with retraining on: the served students' features match
    the snapshot's, the stand-in predictions score above the floors, nothing is started."""
    from core.config import get_settings
    from prepiq.cli import main

    write_params(monitored, small_data_params)
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(monitored.data_dir))
    get_settings.cache_clear()
    code = main(["monitor", "--as-of", monitored.as_of.isoformat(), "--url", monitored.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no threshold crossed: no retraining" in out
    table = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("focus", "progress", "topic"))
    }
    for model in ("focus-area", "progress-forecaster", "topic-recommender"):
        drifted, judged = table[model][3].split("/")  # drifted / judged features
        assert drifted == "0" and int(judged) >= 9, table[model]
    run_id = out.rsplit("MLflow run ", 1)[1].split()[0]
    tags, params, artifacts = monitoring_run(run_id)
    assert tags["retraining_triggered"] == "false"
    assert tags["retraining_reasons"] == "none"
    assert params["monitoring.psi_threshold"] == "0.2"
    assert {"monitoring_report.json", "plots/drift_focus-area.png"} <= set(artifacts)


def test_shifted_serving_triggers_retraining(
    monitored: Monitored,
    prefect_harness: None,
    small_data_params: Path,
    alert_inbox: Inbox,
    private_tracking_store: str,
) -> None:
    """A shift in what the served students do crosses the drift and live-quality
    thresholds; the focus-area model is retrained in this process on a new snapshot of
    the shifted source."""
    from mlflow import MlflowClient

    from pipelines.monitoring import monitoring_flow

    write_params(monitored, small_data_params, retrain_models=["focus-area"], retrain_trials=1)
    shift_recent_answers(monitored, days=38)
    snapshot = read_manifest(monitored.data_dir / RAW_DIR)
    assert snapshot is not None
    report = monitoring_flow(
        source_url=monitored.url,
        data_dir=monitored.data_dir,
        as_of=monitored.as_of,
        retrain_mode="in-process",  # the path without a server (see the deployment test)
    )

    assert report.triggered
    drift, live = (r for r in report.reasons if r.startswith("focus-area: "))
    assert "features drifted" in drift
    assert "accuracy_last_30d" in report.drift["focus-area"]["drifted"]
    assert "seconds_per_mark" in report.drift["focus-area"]["drifted"]
    assert report.drift["progress-forecaster"]["drifted"] == []  # its inputs were not shifted
    assert live.startswith("focus-area: live weak-topic F1")
    assert report.quality["focus-area"]["f1"] < 0.45
    assert report.quality["progress-forecaster"]["n"] > 0

    assert report.retraining is not None
    assert report.retraining["mode"] == "in-process"
    version = report.retraining["models"]["prepiq-focus-area"]
    client = MlflowClient(private_tracking_store, private_tracking_store)
    run_id = client.get_model_version("prepiq-focus-area", version).run_id
    assert run_id is not None
    trained = client.get_run(run_id)
    assert monitored.url.split("///", 1)[1] in trained.data.tags["source"]
    retrained_on = read_manifest(monitored.data_dir / RAW_DIR)
    assert retrained_on is not None and retrained_on.content_hash != snapshot.content_hash

    assert report.mlflow_run_id is not None
    tags, _params, _artifacts = monitoring_run(report.mlflow_run_id)
    assert tags["retraining_triggered"] == "true"
    assert tags["retraining_mode"] == "in-process"
    assert "live weak-topic F1" in tags["retraining_reasons"]
    [alert] = alert_inbox.received
    assert alert["event"] == "retraining_triggered"
    assert alert["details"]["reasons"] == report.reasons


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    from pipelines.monitoring import psi

    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 5000)
    assert psi(reference, rng.normal(0.0, 1.0, 5000), bins=10) < 0.02
    assert psi(reference, rng.normal(1.0, 1.0, 5000), bins=10) > 0.5
    assert psi(np.zeros(100), np.ones(100), bins=10) > 1.0  # a constant reference


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"psi_treshold": 0.1}, "monitoring: unknown keys ['psi_treshold']"),
        ({"retrain_mode": "later"}, "monitoring.retrain_mode: 'later' is not one of"),
        ({"retrain_models": ["ranker"]}, "monitoring.retrain_models: unknown model(s) ['ranker']"),
    ],
)
def test_bad_monitoring_params_are_named(monitoring: dict[str, object], message: str) -> None:
    from core.config import PROJECT_ROOT
    from core.exceptions import ConfigError
    from pipelines.monitoring import MonitoringParams

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["monitoring"].update(monitoring)
    with pytest.raises(ConfigError, match=re.escape(message)):
        MonitoringParams.from_params(params)


def test_retraining_goes_to_the_deployment_when_the_server_has_it(
    prefect_harness: None, small_data_params: Path
) -> None:
    """`auto` on a server with the nightly deployment (registered as `prepiq deploy` does)
    creates a run of it with the monitoring's models and trials, without waiting for it;
    without the deployment it would train in-process."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from pipelines.deployments import register
    from pipelines.monitoring import MonitoringParams, deployment_exists, start_retraining

    p = MonitoringParams(retrain_models=("focus-area",), retrain_trials=1)
    assert not deployment_exists(p.retrain_deployment)
    [registered] = register("prepiq-monitoring-test", ["nightly"])
    assert registered.full_name == p.retrain_deployment
    try:
        started = start_retraining(p, "auto", None, None, None)
        assert started["mode"] == "deployment"
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(started["flow_run"]))
            assert run.parameters == {"models": ["focus-area"], "trials": 1}
            assert run.state is not None and run.state.is_scheduled()  # no worker: not run here
            client.delete_flow_run(run.id)
    finally:
        with get_client(sync_client=True) as client:  # leave the session's server as it was
            client.delete_deployment(client.read_deployment_by_name(p.retrain_deployment).id)


def test_served_predictions_reads_the_window_on_sqlite_and_postgres(
    any_url: str, tmp_path: Path
) -> None:
    """Only predictions about a student, by a known model, made in (start, end], with
    the response as a document (JSONB on PostgreSQL, JSON text on SQLite)."""
    from pipelines.monitoring import served_predictions
    from synthetic.generator import seed_source
    from tests.conftest import END_DATE, migrated_engine

    engine = migrated_engine(any_url)
    seed_source(
        engine, students=3, seed=1, days=60, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    with engine.connect() as conn:
        user = str(conn.exec_driver_sql("SELECT id FROM users ORDER BY id").scalars().first())
    end = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 12, tzinfo=UTC)
    response: dict[str, object] = {"user_id": user, "focus_areas": [{"topic_id": 3}]}
    rows = [
        prediction_row("prepiq-focus-area", user, end - timedelta(hours=1), response),
        prediction_row("prepiq-focus-area", user, end - timedelta(days=8), response),
        prediction_row("prepiq-focus-area", user, end + timedelta(hours=1), response),
        prediction_row("prepiq-retired-model", user, end - timedelta(hours=1), response),
        prediction_row("prepiq-focus-area", user, end - timedelta(hours=1), response)
        | {"user_id": None},
    ]
    with engine.begin() as conn:
        conn.execute(insert(ModelPrediction), rows)
    served = served_predictions(engine, end - timedelta(days=7), end)
    assert served["model"].tolist() == ["focus-area"]
    assert served["response"].tolist() == [response]
    assert served["created_at"].iloc[0] == pd.Timestamp(end - timedelta(hours=1))
