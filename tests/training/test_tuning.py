"""Tuning storage and workers: two real processes share one Optuna study in the local
PostgreSQL, every trial is a nested MLflow run under the model's parent run, and the
study's trial budget holds across workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from mlflow import MlflowClient

from core.config import get_settings
from core.exceptions import ConfigError
from features.frames import SourceFrames
from tests.training.model_stub import StubSpec
from training import tracking
from training.card import ModelCard
from training.model_spec import TrainingContext
from training.tuning import resolve_storage, tune


class SlowQuadratic(StubSpec):
    """A stand-in model whose objective is a slow quadratic: the test is about the
    mechanics of sharing a study between processes, not about any model (the real
    models' objectives take minutes). Module-level, so a spawned worker can import it."""

    card = ModelCard("test-quadratic", "prepiq-test-quadratic", "squared_error", False)
    direction = "minimize"

    def default_trials(self, ctx: TrainingContext) -> int:
        return 4

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> Any:
        return 3.0  # the optimum

    def objective(self, ctx: TrainingContext, data: Any) -> Callable[[Any], float]:
        def score(trial: Any) -> float:
            x = trial.suggest_float("x", -10, 10)
            time.sleep(1.5)  # long enough that the second worker is up before the end
            return float((x - data) ** 2)

        return score


SPEC = SlowQuadratic()


def test_storage_choice(tmp_path: Path) -> None:
    assert resolve_storage(None, 1, "s") is None
    journal = resolve_storage(None, 2, "s")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert resolve_storage("postgresql://u@h:5432/d", 2, "s").startswith("postgresql+psycopg://")
    with pytest.raises(ConfigError, match="--workers 2 needs storage"):
        resolve_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 2, "s")
    with pytest.raises(ConfigError, match="at least 1"):
        tune(
            SPEC,
            _context(tmp_path / "raw"),
            3.0,
            trials=1,
            storage=None,
            workers=0,
            name="s",
            experiment_id="0",
            parent_run_id="x",
        )


def _context(snapshot: Path) -> TrainingContext:
    return TrainingContext(
        snapshot_dir=snapshot,
        data_dir=snapshot.parent,
        as_of=datetime(2026, 11, 20, tzinfo=UTC),
        params={},
        seed=42,
    )


@pytest.mark.postgres
def test_two_worker_processes_share_one_study_in_postgres(
    tmp_path: Path,
    clean_snapshot: Path,
    make_pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = make_pg_database()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    get_settings.cache_clear()
    tracking.configure()
    experiment_id = tracking.experiment(SPEC.name)
    mlflow.set_experiment(experiment_id=experiment_id)
    ctx = _context(clean_snapshot)  # each worker process reads the snapshot itself
    trials = 8
    with mlflow.start_run(run_name="parent") as parent:
        study = tune(
            SPEC,
            ctx,
            3.0,
            trials=trials,
            storage=storage,
            workers=2,
            name="quadratic-shared",
            experiment_id=experiment_id,
            parent_run_id=parent.info.run_id,
        )
    get_settings.cache_clear()

    # The study lives in PostgreSQL, where another machine would find it.
    stored = optuna.load_study(
        study_name="quadratic-shared", storage=resolve_storage(storage, 2, "")
    )
    finished = [t for t in stored.trials if t.state.is_finished()]
    assert len(stored.trials) == len(finished) == trials  # the budget is the study's
    assert {t.user_attrs["worker"] for t in finished} == {0, 1}  # both processes ran trials
    assert study.best_value == min(t.value for t in finished if t.value is not None)

    client = MlflowClient(tracking_uri=tracking_uri)
    nested = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(nested) == trials
    assert {r.data.tags["tuning_worker"] for r in nested} == {"0", "1"}
    assert all(r.data.tags["state"] == "complete" for r in nested)
