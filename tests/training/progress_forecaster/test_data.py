"""Progress forecaster data: labels are the completion the source later recorded, the
hold-out is other students at a later origin, and features never read past their
origin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.frames import SourceFrames
from tests.training.progress_forecaster.conftest import AS_OF, Trained
from training.progress_forecaster.data import ForecastData, examples_at
from training.progress_forecaster.params import ProgressForecasterParams
from training.progress_forecaster.spec import SPEC


def test_completion_never_falls_in_the_source(frames: SourceFrames) -> None:
    """What clipping forecasts to [completion now, 100] relies on."""
    progress = frames["user_progress"].sort_values(["user_id", "recorded_on"])
    assert (progress.groupby("user_id")["completion_percent"].diff().dropna() >= 0).all()


def test_labels_are_the_completion_recorded_later(
    frames: SourceFrames, dataset: ForecastData, params: ProgressForecasterParams
) -> None:
    progress = frames["user_progress"]
    origin = dataset.holdout_origin.date()
    for row in range(0, len(dataset.holdout), 17):
        user = dataset.holdout.user_id[row]
        mine = progress[progress["user_id"] == user]
        for k, h in enumerate(params.horizons_days):
            recorded = mine[mine["recorded_on"] <= origin + timedelta(days=h)]
            expected = recorded.sort_values("recorded_on")["completion_percent"].iloc[-1]
            assert dataset.holdout.target[row, k] == pytest.approx(expected)
        before = mine[mine["recorded_on"] <= origin]["completion_percent"]
        assert dataset.holdout.completion[row] == pytest.approx(before.max() if len(before) else 0)


def test_holdout_is_other_students_at_a_later_origin(
    dataset: ForecastData, params: ProgressForecasterParams
) -> None:
    assert set(dataset.train.user_id).isdisjoint(dataset.holdout.user_id)
    for examples in dataset.backtest.values():
        assert set(dataset.train.user_id).isdisjoint(examples.user_id)
    assert set(dataset.train.user_id).isdisjoint(dataset.latest.user_id)
    holdout_origin = np.datetime64(dataset.holdout_origin.replace(tzinfo=None), "s")
    assert dataset.train.origin.max() < holdout_origin
    assert len(np.unique(dataset.train.origin)) >= 4
    assert not np.isnan(dataset.train.target).any()  # every training label is observed
    assert not np.isnan(dataset.holdout.target).any()
    assert dataset.holdout_origin + timedelta(days=max(params.horizons_days)) <= AS_OF
    assert len(dataset.holdout) > 40


def test_features_read_nothing_after_the_origin(
    frames: SourceFrames, params: ProgressForecasterParams
) -> None:
    """Rewriting every row after the origin changes the labels, never the inputs."""
    origin = AS_OF - timedelta(days=70)
    day = origin.date()
    future = dict(frames.tables)
    activity = future["study_activity"].copy()
    activity.loc[activity["activity_date"] > day, "study_minutes"] += 100
    progress = future["user_progress"].copy()
    progress.loc[progress["recorded_on"] > day, "completion_percent"] = 100.0
    tests = future["tests"].copy()
    tests.loc[tests["started_at"] > pd.Timestamp(origin), "score_percent"] = 0.0
    future |= {"study_activity": activity, "user_progress": progress, "tests": tests}

    original = examples_at(frames, origin, params, AS_OF.date())
    rewritten = examples_at(SourceFrames(future), origin, params, AS_OF.date())
    np.testing.assert_array_equal(original.user_id, rewritten.user_id)
    np.testing.assert_array_equal(original.sequence, rewritten.sequence)
    np.testing.assert_array_equal(original.static, rewritten.static)
    # Labels do read the future: 100 wherever a record follows the origin in the horizon.
    assert ((rewritten.target == 100.0) | (rewritten.target == original.target)).all()
    assert (rewritten.target != original.target).mean() > 0.5


def test_holdout_size_is_what_the_evaluation_scores(
    dataset: ForecastData, trained: Trained
) -> None:
    """The students `min_holdout` counts are the ones the hold-out report scores."""
    assert SPEC.holdout_size(dataset).count == trained.outcome.report["model"]["n"] > 0
