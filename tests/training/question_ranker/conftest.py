"""The question ranker's fixtures: a context of the default params with a tiny search
space, the seeded snapshot's dataset, and one tuned, refitted and evaluated model (shared
by every test module of the package, so it is trained once)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pandas as pd
import pytest

from core.config import PROJECT_ROOT, load_params
from features.frames import SourceFrames, from_snapshot
from features.questions import TABLES
from tests.conftest import END_DATE
from training.model_spec import Outcome, TrainingContext
from training.question_ranker.data import RankerData
from training.question_ranker.params import QuestionRankerParams
from training.question_ranker.spec import SPEC

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)


@pytest.fixture(scope="package")
def context(clean_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingContext:
    """Default params with a tiny search space and two trials."""
    params = load_params(PROJECT_ROOT / "params.yaml")
    defaults = QuestionRankerParams.from_params(params)
    small = defaults.search_space.model_dump(mode="json") | {
        "gb_iterations": [20, 40],
        "embedding_components": [0, 2],
    }
    typed = defaults.replaced(trials=2, search_space=small)
    params[QuestionRankerParams.SECTION] = typed.model_dump(mode="json")
    return TrainingContext(
        snapshot_dir=clean_snapshot,
        data_dir=clean_snapshot.parent,
        as_of=AS_OF,
        params=params,
        seed=42,
        trials=2,
        truth_dir=clean_snapshot.parent.parent / "missing-truth",
    )


@pytest.fixture(scope="package")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="package")
def data(context: TrainingContext, frames: SourceFrames) -> RankerData:
    return SPEC.prepare(context, frames)


@pytest.fixture(scope="package")
def outcome(context: TrainingContext, data: RankerData) -> tuple[Outcome, float]:
    """Tune (two trials), refit and evaluate, as `train_and_log` does without MLflow."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(SPEC.objective(context, data), n_trials=2)
    return SPEC.finish(context, data, study.best_params, study.best_value), study.best_value


def trained_predict(outcome: tuple[Outcome, float]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The trained model's `predict`, as the promotion gate calls a loaded version's."""
    model = outcome[0].python_model

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(model.predict(None, frame))

    return predict
