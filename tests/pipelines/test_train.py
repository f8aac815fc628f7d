"""The training flow end to end through Prefect's engine and a real MLflow store and
registry (SQLite and PostgreSQL): a registered, aliased version that loads and predicts,
trials nested under their run, lineage recorded; and a failed data gate trains nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from core.config import get_settings
from core.exceptions import DataValidationError
from features.focus import FEATURE_COLUMNS
from features.versioning import dvc_hash
from pipelines.train import train_flow
from prepiq.cli import main
from synthetic.generator import seed_source
from tests.conftest import END_DATE, migrated_engine
from training.models import MODELS

pytestmark = pytest.mark.usefixtures("prefect_harness", "small_data_params")
AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def tracking_uri(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_pg_database,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if request.param == "sqlite" else make_pg_database()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()
    yield uri
    get_settings.cache_clear()


def seeded_source(tmp_path: Path, students: int = 160) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = migrated_engine(url)
    seed_source(
        engine,
        students=students,
        seed=3,
        days=120,
        end_date=END_DATE,
        truth_dir=get_settings().ground_truth_dir,
    )
    return url


# Each model's input is a feature table the shared builders write (and serving builds).
INPUT_TABLES = {
    "prepiq-progress-forecaster": "progress_sequences",
    "prepiq-topic-recommender": "topic_candidates",
    "prepiq-focus-area": "topic_test_stats",
    "prepiq-question-ranker": "question_history",
}


def one_students_rows(table: pd.DataFrame) -> pd.DataFrame:
    """What serving passes for one request: one student's rows (one subject's for the ranker)."""
    key = "user_id" if "user_id" in table else "subject_id"
    return table[table[key] == table[key].iloc[0]].reset_index(drop=True)


def test_a_small_run_registers_four_models_that_load_and_predict(
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = seeded_source(tmp_path)
    results = train_flow(trials=2, source_url=source, data_dir=tmp_path / "data", as_of=AS_OF)
    assert [r.model for r in results.models] == list(INPUT_TABLES)
    assert set(results.stage_seconds) == {
        "ingest_and_gate",
        "features",
        *(f"train_{key}" for key in MODELS),
    }
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for summary in results.models:
        name = summary.model
        challenger = client.get_model_version_by_alias(name, "challenger")
        assert str(challenger.version) == summary.version
        model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
        features = pd.read_parquet(tmp_path / "data" / "features" / f"{INPUT_TABLES[name]}.parquet")
        predicted = model.predict(one_students_rows(features))
        assert len(predicted) > 0, name
        assert np.isfinite(float(summary.value)), name

        run = client.get_run(summary.run_id)
        # The data version is the DVC hash of the snapshot it trained on.
        assert run.data.tags["data_version"] == dvc_hash(tmp_path / "data" / "raw")
        assert run.data.tags["git_commit"] != "unknown"
        spec = MODELS[run.data.tags["model"].removeprefix("prepiq-")]
        assert f"holdout.model.{spec.main_metric}" in run.data.metrics
        assert any(k.startswith("holdout.baseline_") for k in run.data.metrics), name
        trials = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
        )
        assert len(trials) == 2, name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert {"evaluation/evaluation.json", "evaluation/evaluation.md"} <= artifacts, name
        assert any(path.endswith(".png") for path in artifacts), name
        gate = [a.path for a in client.list_artifacts(run.info.run_id, "data_gate")]
        assert gate == ["data_gate/report.json"]

    focus = next(r for r in results.models if r.model == "prepiq-focus-area")
    run = client.get_run(focus.run_id)
    features = pd.read_parquet(tmp_path / "data" / "features" / "topic_test_stats.parquet")
    predicted = mlflow.pyfunc.load_model("models:/prepiq-focus-area@challenger").predict(
        features[["user_id", "topic_id", *FEATURE_COLUMNS]].head(10)
    )
    assert {"weak_probability", "is_weak", "expected_score_gain", "priority"} <= set(
        predicted.columns
    )
    assert predicted["weak_probability"].between(0, 1).all()

    # `prepiq evaluate` scores a registered version on the same hold-out again: the
    # loaded model reproduces what training logged.
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    assert main(["evaluate", "--model", "focus-area", "--alias", "challenger"]) == 0
    evaluated = json.loads(
        (tmp_path / "data" / "evaluation" / "focus-area" / "evaluation.json").read_text()
    )
    assert evaluated["model"]["f1"] == pytest.approx(run.data.metrics["holdout.model.f1"])
    assert main(["evaluate", "--model", "focus-area", "--version", "99"]) == 2
    assert "cannot load models:/prepiq-focus-area/99" in capsys.readouterr().err

    # A second run (on the same snapshot, as the DVC train stage runs) adds a challenger.
    second = train_flow(models=["focus-area"], trials=1, data_dir=tmp_path / "data", ingest=False)
    newest = client.get_model_version_by_alias("prepiq-focus-area", "challenger")
    assert str(newest.version) == second.models[0].version != focus.version


def test_a_failed_data_gate_trains_and_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()
    source = seeded_source(tmp_path, students=30)
    stale = AS_OF + timedelta(days=60)  # the newest activity is two months old by then
    with pytest.raises(DataValidationError, match="expect_column_max_to_be_between"):
        train_flow(
            models=["focus-area"],
            trials=1,
            source_url=source,
            data_dir=tmp_path / "data",
            as_of=stale,
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models() == []
    assert not (tmp_path / "data" / "features").exists()
    get_settings.cache_clear()
