"""The focus-area model as training builds it: tuned, refitted and evaluated by its spec
on a real (small) snapshot (`conftest.outcome`), then probed through the pyfunc with
features rebuilt by the shared feature builder from edited answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.focus import FEATURE_COLUMNS, feature_matrix, topic_test_stats
from features.frames import from_snapshot
from features.store import TABLES
from tests.training.focus_area.conftest import AS_OF
from training.focus_area.data import with_answers_on_topic
from training.focus_area.estimator import MONOTONE
from training.focus_area.inference import FocusAreaPyfunc
from training.model_spec import Outcome


def test_the_spec_reports_the_model_next_to_both_baselines(outcome: Outcome) -> None:
    assert set(outcome.report) >= {
        "model",
        "baseline_accuracy_rule",
        "baseline_logistic_regression",
    }
    assert outcome.report["model"]["roc_auc"] > 0.75  # it learned something real
    assert 0.1 <= outcome.params["threshold"] <= 0.9
    assert "| model |" in outcome.markdown


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
            rebuilt = topic_test_stats(with_answers_on_topic(mine, user, topic, correct), AS_OF)
            row = rebuilt[rebuilt["topic_id"] == topic]
            verdict[correct] = outcome.python_model.predict(None, row).iloc[0]
        assert bool(verdict[False]["is_weak"]), (user, topic)
        # All right: far less likely weak (not necessarily below the threshold: slow or
        # rushed answers and a weak student overall still count against a topic).
        assert verdict[True]["weak_probability"] < verdict[False]["weak_probability"] / 2


def test_more_right_answers_never_raise_the_weak_probability(
    outcome: Outcome, clean_snapshot: Path
) -> None:
    """The tree families are fitted with `monotonic_cst` (`training.focus_area.estimator.MONOTONE`): moving any
    accuracy feature up (or a wrong-answer pattern down) never raises a pair's weak
    probability, whatever the rest of the row."""
    frames = from_snapshot(clean_snapshot, TABLES)
    x = feature_matrix(topic_test_stats(frames, AS_OF))
    model = outcome.python_model
    assert isinstance(model, FocusAreaPyfunc)
    estimator = model.estimator
    assert estimator.monotonic_cst is not None
    base = estimator.predict_proba(x)[:, 1]
    for column, direction in MONOTONE.items():
        moved = x.copy()
        at = FEATURE_COLUMNS.index(column)
        # accuracies and shares live in [0, 1]: push each toward its favourable end
        moved[:, at] = np.clip(moved[:, at] - direction * 0.3, 0.0, 1.0)
        assert (estimator.predict_proba(moved)[:, 1] <= base + 1e-12).all(), column
