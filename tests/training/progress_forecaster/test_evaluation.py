"""Progress forecaster evaluation for the promotion gate: its slices, behavioural checks
and request samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.exceptions import HoldoutError
from features.frames import SourceFrames
from features.progress import STATIC_COLUMNS
from tests.training.progress_forecaster.conftest import AS_OF, Trained, served
from training.model_spec import TrainingContext
from training.progress_forecaster.data import ForecastData
from training.progress_forecaster.evaluation import with_more_study
from training.progress_forecaster.inference import output_column
from training.progress_forecaster.params import ProgressForecasterParams
from training.progress_forecaster.spec import SPEC


def test_slices_cover_first_subject_tenure_and_recent_activity(
    trained: Trained, ctx: TrainingContext, dataset: ForecastData, frames: SourceFrames
) -> None:
    # Every student of the 120-day fixture joined under 60 days before the hold-out origin.
    joined_by = ctx.params | {"promotion": {**ctx.params["promotion"], "new_student_days": 45}}
    slices = SPEC.slice_reports(replace(ctx, params=joined_by), dataset, served(trained))
    pairs = [
        ("new students", "long-standing students"),
        ("low recent activity", "high recent activity"),
    ]
    table = dataset.holdout_slices
    assert table is not None and list(table.index) == list(dataset.holdout.user_id)
    n = len(dataset.holdout)
    report = trained.outcome.report["model"]
    for low, high in pairs:
        assert slices[low]["n"] > 0 and slices[high]["n"] > 0
        assert slices[low]["n"] + slices[high]["n"] == n
        # The slices are the evaluation's own scoring on parts of the hold-out.
        for metric in ("mae_30d", "mae_60d"):
            pooled = (
                slices[low]["n"] * slices[low][metric] + slices[high]["n"] * slices[high][metric]
            )
            assert pooled / n == pytest.approx(report[metric])
    subjects = [name for name in slices if name.startswith("subject ")]
    assert len(subjects) == table["subject"].nunique() > 1
    assert sum(slices[s]["n"] for s in subjects) == table["subject"].notna().sum()
    assert all(np.isfinite(s["mae_mean"]) and s["n"] >= 1 for s in slices.values())

    # The slice columns are read from the source at the origin.
    origin = dataset.holdout_origin
    user = table.index[0]
    enrolled = frames["user_subjects"]
    mine = enrolled[enrolled["user_id"] == user].sort_values(["enrolled_at", "subject_id"])
    assert table.loc[user, "subject"] == mine["subject_id"].iloc[0]
    static_days = float(dataset.holdout.static[0][STATIC_COLUMNS.index("days_since_join")])
    assert abs(table.loc[user, "days_since_joined"] - static_days) < 1.0
    activity = frames["study_activity"]
    recent = activity[
        (activity["user_id"] == user)
        & (activity["activity_date"] > origin.date() - timedelta(days=30))
        & (activity["activity_date"] <= origin.date())
    ]
    assert table.loc[user, "study_minutes_last_30d"] == recent["study_minutes"].sum()


def test_slices_need_a_holdout_frozen_with_them(
    trained: Trained, ctx: TrainingContext, dataset: ForecastData
) -> None:
    with pytest.raises(HoldoutError, match="re-freeze"):
        SPEC.slice_reports(ctx, replace(dataset, holdout_slices=None), served(trained))


def test_more_study_edits_only_the_active_days_of_the_window(frames: SourceFrames) -> None:
    origin = AS_OF - timedelta(days=60)
    before = frames["study_activity"]
    after = with_more_study(frames, origin, 28)["study_activity"]
    inside = (before["activity_date"] > origin.date() - timedelta(days=28)) & (
        before["activity_date"] <= origin.date()
    )
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(
        after["study_minutes"], np.where(inside, 1.5, 1.0) * before["study_minutes"]
    )
    np.testing.assert_array_equal(after["logins"], before["logins"] + inside)
    assert frames["study_activity"] is before  # the source frames are left as they were


def reversing_study(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A deliberately broken model: its input pipeline reverses study on active days (the
    most minutes and logins read as the fewest), so more study reads as less."""

    def broken(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        active = frame["study_minutes"] > 0
        frame.loc[active, "study_minutes"] = (365.0 - frame.loc[active, "study_minutes"]).clip(5.0)
        frame.loc[active, "logins"] = (13.0 - frame.loc[active, "logins"]).clip(1.0)
        return predict(frame)

    return broken


def test_behaviour_checks_pass_on_the_trained_model_and_fail_when_study_is_reversed(
    trained: Trained, ctx: TrainingContext, dataset: ForecastData
) -> None:
    checks = SPEC.behaviour_checks(ctx, dataset, served(trained))
    assert set(checks) == {
        "more study raises the forecast",
        "more study does not lower the forecast",
    }
    assert all(ok for ok, _ in checks.values()), checks
    assert "hold-out students" in checks["more study raises the forecast"][1]

    broken = SPEC.behaviour_checks(ctx, dataset, reversing_study(served(trained)))
    assert not broken["more study raises the forecast"][0], broken
    assert not broken["more study does not lower the forecast"][0], broken


def test_request_samples_are_single_students_the_model_forecasts(
    trained: Trained, dataset: ForecastData, params: ProgressForecasterParams
) -> None:
    samples = SPEC.request_samples(dataset, 5)
    assert len(samples) == 5
    predict = served(trained)
    for request in samples:
        assert request["user_id"].nunique() == 1
        assert list(request.columns) == list(dataset.latest.rows.columns)  # type: ignore[union-attr]
        assert len(request) == params.window_days
        out = predict(request)
        assert len(out) == 1 and out["user_id"].iloc[0] == request["user_id"].iloc[0]
        assert out[output_column(0.5, 60)].notna().all()
    assert len(SPEC.request_samples(dataset, 10_000)) == len(dataset.holdout)
