"""The focus-area model as training builds and serving loads it: tuned, refitted and
evaluated by its spec on a real (small) snapshot, then probed through the pyfunc with
features rebuilt by the shared feature builder from edited answers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import load_params
from features.focus import FEATURE_COLUMNS, feature_matrix, topic_test_stats
from features.frames import from_snapshot
from features.store import TABLES
from tests.conftest import END_DATE, SMALL_DATA_PARAMS
from training import focus_area as fa
from training.model_spec import Outcome, TrainingContext
from training.runs import load_frames

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 0, tzinfo=UTC)


def small_params() -> dict[str, Any]:
    """params.yaml with a label the 120-day, 300-student snapshot can fill, one family."""
    params = load_params()
    params["focus_area"] |= SMALL_DATA_PARAMS["focus_area"] | {
        "candidates": ["random_forest"],
        "search_space": {"rf_trees": [50, 50]},
    }
    return params


@pytest.fixture(scope="module")
def context(clean_snapshot: Path) -> TrainingContext:
    return TrainingContext(
        snapshot_dir=clean_snapshot,
        data_dir=clean_snapshot.parent,
        as_of=AS_OF,
        params=small_params(),
        seed=42,
        trials=1,
    )


@pytest.fixture(scope="module")
def outcome(context: TrainingContext) -> Outcome:
    import optuna

    spec = fa.SPEC
    data = spec.prepare(context, load_frames(context))
    study = optuna.create_study(
        direction=spec.direction, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(spec.objective(context, data), n_trials=1)
    return spec.finish(context, data, study.best_params, study.best_value)


def test_the_spec_reports_the_model_next_to_both_baselines(outcome: Outcome) -> None:
    assert set(outcome.report) >= {
        "model",
        "baseline_accuracy_rule",
        "baseline_logistic_regression",
    }
    assert outcome.report["model"]["roc_auc"] > 0.75  # it learned something real
    assert 0.1 <= outcome.params["threshold"] <= 0.9
    assert "| model |" in outcome.markdown


def test_the_logged_model_predicts_suggestions_per_student(
    outcome: Outcome, clean_snapshot: Path
) -> None:
    frames = from_snapshot(clean_snapshot, TABLES)
    user = frames["users"]["id"].iloc[0]
    features = topic_test_stats(frames.for_users([user]), AS_OF)
    predicted = outcome.python_model.predict(None, features)
    assert list(predicted.columns) == [
        "user_id",
        "topic_id",
        "weak_probability",
        "is_weak",
        "expected_score_gain",
        "practice",
        "priority",
    ]
    assert predicted["weak_probability"].between(0, 1).all()
    assert sorted(predicted["priority"]) == list(range(1, len(features) + 1))
    first = predicted.sort_values("priority").iloc[0]
    assert first["expected_score_gain"] == predicted["expected_score_gain"].max()


def test_a_student_failing_every_question_of_a_topic_gets_it_flagged_weak(
    outcome: Outcome, clean_snapshot: Path
) -> None:
    """Behaviour: the same student and topic, with every answer on it wrong, then right;
    features rebuilt by the builder serving uses."""
    frames = from_snapshot(clean_snapshot, TABLES)
    stats = topic_test_stats(frames, AS_OF)
    busy = stats[stats["attempts"] >= 10].iloc[:5]
    assert len(busy) == 5
    for user, topic in zip(busy["user_id"], busy["topic_id"], strict=True):
        mine = frames.for_users([user])
        verdict = {}
        for correct in (False, True):
            rebuilt = topic_test_stats(fa.with_answers_on_topic(mine, user, topic, correct), AS_OF)
            row = rebuilt[rebuilt["topic_id"] == topic]
            verdict[correct] = outcome.python_model.predict(None, row).iloc[0]
        assert bool(verdict[False]["is_weak"]), (user, topic)
        # All right: far less likely weak (not necessarily below the threshold: slow or
        # rushed answers and a weak student overall still count against a topic).
        assert verdict[True]["weak_probability"] < verdict[False]["weak_probability"] / 2


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
)
def test_priorities_are_pandas_first_ranks_within_each_student(
    rows: list[tuple[str, float]], per_student: bool
) -> None:
    """The numpy priorities serving computes equal pandas' `rank(method="first")` per
    student (ties in row order), with and without a user_id column."""
    users = np.array([u for u, _ in rows], dtype=object)
    key = np.array([k for _, k in rows])
    groups = users if per_student else np.zeros(len(rows))
    expected = pd.Series(key).groupby(groups).rank(method="first").astype(int).to_numpy()
    assert fa.priority_ranks(key, users if per_student else None).tolist() == expected.tolist()


def test_more_right_answers_never_raise_the_weak_probability(
    outcome: Outcome, clean_snapshot: Path
) -> None:
    """The tree families are fitted with `monotonic_cst` (`fa.MONOTONE`): moving any
    accuracy feature up (or a wrong-answer pattern down) never raises a pair's weak
    probability, whatever the rest of the row."""
    frames = from_snapshot(clean_snapshot, TABLES)
    x = feature_matrix(topic_test_stats(frames, AS_OF))
    model = outcome.python_model
    assert isinstance(model, fa.FocusAreaPyfunc)
    estimator = model.estimator
    assert estimator.monotonic_cst is not None
    base = estimator.predict_proba(x)[:, 1]
    for column, direction in fa.MONOTONE.items():
        moved = x.copy()
        at = FEATURE_COLUMNS.index(column)
        # accuracies and shares live in [0, 1]: push each toward its favourable end
        moved[:, at] = np.clip(moved[:, at] - direction * 0.3, 0.0, 1.0)
        assert (estimator.predict_proba(moved)[:, 1] <= base + 1e-12).all(), column
