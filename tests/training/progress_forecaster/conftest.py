"""The progress forecaster's fixtures: the small seeded source's frames, a training
context on it, its dataset and the spec trained end to end once for the whole package."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from core.config import load_params
from features.frames import SourceFrames, from_snapshot
from features.store import TABLES
from synthetic.small_source import SMALL_SOURCE_PARAMS
from tests.conftest import END_DATE
from tests.training.snapshot_context import snapshot_context
from training.model_spec import Outcome, TrainingContext
from training.progress_forecaster.data import ForecastData
from training.progress_forecaster.params import ProgressForecasterParams
from training.progress_forecaster.spec import SPEC

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
# Small and fast: the 120-day fixture holds +30/+60 day labels (and truth) for 6 origins.
# The small source's section, with one trial of a fixed network trained longer.
SECTION: dict[str, Any] = {
    **SMALL_SOURCE_PARAMS["progress_forecaster"],
    "trials": 1,
    "search_space": {
        "hidden_size": [16, 16],
        "layers": [1, 1],
        "dropout": [0.0, 0.0],
        "learning_rate": [0.01, 0.01],
        "epochs": [30, 30],
    },
}


def small_params() -> dict[str, Any]:
    params = copy.deepcopy(load_params())
    params["progress_forecaster"] = {**params.get("progress_forecaster", {}), **SECTION}
    return params


@pytest.fixture(scope="package")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="package")
def ctx(clean_snapshot: Path, seeded_sqlite: tuple[Any, Path]) -> TrainingContext:
    return snapshot_context(clean_snapshot, seeded_sqlite[1], AS_OF, small_params())


@pytest.fixture(scope="package")
def params(ctx: TrainingContext) -> ProgressForecasterParams:
    return SPEC.params(ctx)


@pytest.fixture(scope="package")
def dataset(ctx: TrainingContext, frames: SourceFrames) -> ForecastData:
    return SPEC.prepare(ctx, frames)


@dataclass
class Trained:
    outcome: Outcome
    study: optuna.Study


@pytest.fixture(scope="package")
def trained(ctx: TrainingContext, dataset: ForecastData) -> Trained:
    """The spec end to end, without MLflow: a real (in-memory) study, then the refit."""
    study = optuna.create_study(direction=SPEC.direction)
    study.optimize(SPEC.objective(ctx, dataset), n_trials=1)
    return Trained(SPEC.finish(ctx, dataset, study.best_params, study.best_value), study)


def served(trained: Trained) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The trained model's predict as the gate calls it (a DataFrame in, a DataFrame out)."""
    model = trained.outcome.python_model
    return lambda frame: model.predict(None, frame)
