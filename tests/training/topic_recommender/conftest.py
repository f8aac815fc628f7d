"""The topic recommender's fixtures: the small seeded source's frames, a training context
on it, its dataset and the spec tuned, refitted and evaluated once for the whole package."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from sqlalchemy import Engine

from core.config import load_params
from features.frames import SourceFrames, from_snapshot
from features.recommend import candidate_topics
from features.store import TABLES
from synthetic.small_source import SMALL_SOURCE_PARAMS
from tests.conftest import END_DATE
from tests.training.snapshot_context import snapshot_context
from training.model_spec import Outcome, TrainingContext
from training.topic_recommender.data import RecommenderData
from training.topic_recommender.params import TopicRecommenderParams
from training.topic_recommender.spec import SPEC

Predict = Callable[[pd.DataFrame], pd.DataFrame]
AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
SMALL_SPACE = {
    "als_factors": [4, 8],
    "als_iterations": [3, 5],
    "gb_iterations": [20, 40],
    "gb_leaf_nodes": [8, 16],
    "gb_min_leaf": [20, 40],
}


def small_params() -> dict[str, Any]:
    """params.yaml with the small source's overlay, 2 trials of a tiny search space."""
    params = copy.deepcopy(load_params())
    params["topic_recommender"] = params["topic_recommender"] | {
        **SMALL_SOURCE_PARAMS["topic_recommender"],
        "trials": 2,
        "search_space": params["topic_recommender"]["search_space"] | SMALL_SPACE,
    }
    return params


@pytest.fixture(scope="package")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="package")
def context(clean_snapshot: Path, seeded_sqlite: tuple[Engine, Path]) -> TrainingContext:
    return snapshot_context(clean_snapshot, seeded_sqlite[1], AS_OF, small_params())


@pytest.fixture(scope="package")
def params(context: TrainingContext) -> TopicRecommenderParams:
    return SPEC.params(context)


@pytest.fixture(scope="package")
def dataset(context: TrainingContext, frames: SourceFrames) -> RecommenderData:
    return SPEC.prepare(context, frames)


@pytest.fixture(scope="package")
def outcome(context: TrainingContext, dataset: RecommenderData) -> Outcome:
    """The real spec, tuned with 2 trials of a tiny search space, refitted and evaluated."""
    study = optuna.create_study(
        direction=SPEC.direction, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(SPEC.objective(context, dataset), n_trials=SPEC.default_trials(context))
    return SPEC.finish(context, dataset, study.best_params, study.best_value)


def one_student(frames: SourceFrames, dataset: RecommenderData) -> pd.DataFrame:
    """Builder output for a hold-out student (unseen at training), from that student's
    rows alone, as serving builds it."""
    student = str(dataset.holdout.groupby("user_id")["practised"].sum().idxmax())
    return candidate_topics(frames.for_users([student]), dataset.holdout_origin)


def served(outcome: Outcome) -> Predict:
    """The trained model's predict, as the gate calls a loaded version's."""

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return outcome.python_model.predict(None, frame)

    return predict
