"""Progress forecaster: labels are the completion the source later recorded, the hold-out
is other students at a later origin, features never read past their origin, the spec
trains end to end, and more study raises the forecast; the promotion gate's slices,
behavioural checks and request samples."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import load_params
from core.exceptions import ConfigError, HoldoutError
from features.frames import SourceFrames, from_snapshot
from features.progress import SEQUENCE_COLUMNS, STATIC_COLUMNS, daily_sequences
from features.store import TABLES
from synthetic.small_source import SMALL_SOURCE_PARAMS
from tests.conftest import END_DATE
from training import progress_forecaster as pf
from training.model_spec import Outcome, TrainingContext

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


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="module")
def ctx(clean_snapshot: Path, seeded_sqlite: tuple[Any, Path]) -> TrainingContext:
    return TrainingContext(
        snapshot_dir=clean_snapshot,
        data_dir=clean_snapshot.parent,
        as_of=AS_OF,
        params=small_params(),
        seed=42,
        truth_dir=seeded_sqlite[1],
    )


@pytest.fixture(scope="module")
def params(ctx: TrainingContext) -> pf.ProgressForecasterParams:
    return pf.ProgressForecasterParams.from_params(ctx.params)


@pytest.fixture(scope="module")
def dataset(ctx: TrainingContext, frames: SourceFrames) -> pf.ForecastData:
    return pf.SPEC.prepare(ctx, frames)


@dataclass
class Trained:
    outcome: Outcome
    study: optuna.Study


@pytest.fixture(scope="module")
def trained(ctx: TrainingContext, dataset: pf.ForecastData) -> Trained:
    """The spec end to end, without MLflow: a real (in-memory) study, then the refit."""
    study = optuna.create_study(direction=pf.SPEC.direction)
    study.optimize(pf.SPEC.objective(ctx, dataset), n_trials=1)
    return Trained(pf.SPEC.finish(ctx, dataset, study.best_params, study.best_value), study)


def test_params_reject_unknown_hyperparameters_and_a_missing_median() -> None:
    with pytest.raises(ConfigError, match="hidden_units"):
        pf.ProgressForecasterParams.from_params(
            {"progress_forecaster": {"search_space": {"hidden_units": [8, 16]}}}
        )
    with pytest.raises(ConfigError, match=r"needs 0\.5"):
        pf.ProgressForecasterParams.from_params({"progress_forecaster": {"quantiles": [0.1, 0.9]}})


def test_completion_never_falls_in_the_source(frames: SourceFrames) -> None:
    """What clipping forecasts to [completion now, 100] relies on."""
    progress = frames["user_progress"].sort_values(["user_id", "recorded_on"])
    assert (progress.groupby("user_id")["completion_percent"].diff().dropna() >= 0).all()


def test_labels_are_the_completion_recorded_later(
    frames: SourceFrames, dataset: pf.ForecastData, params: pf.ProgressForecasterParams
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
    dataset: pf.ForecastData, params: pf.ProgressForecasterParams
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
    frames: SourceFrames, params: pf.ProgressForecasterParams
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

    original = pf.examples_at(frames, origin, params, AS_OF.date())
    rewritten = pf.examples_at(SourceFrames(future), origin, params, AS_OF.date())
    np.testing.assert_array_equal(original.user_id, rewritten.user_id)
    np.testing.assert_array_equal(original.sequence, rewritten.sequence)
    np.testing.assert_array_equal(original.static, rewritten.static)
    # Labels do read the future: 100 wherever a record follows the origin in the horizon.
    assert ((rewritten.target == 100.0) | (rewritten.target == original.target)).all()
    assert (rewritten.target != original.target).mean() > 0.5


def test_tuning_folds_are_by_student_and_validate_later(
    dataset: pf.ForecastData, params: pf.ProgressForecasterParams
) -> None:
    train = dataset.train
    folds = pf.time_ordered_folds(train, params, seed=42)
    assert len(folds) == params.cv_folds
    for fit_rows, score_rows in folds:
        assert len(fit_rows) and len(score_rows)
        assert set(train.user_id[fit_rows]).isdisjoint(train.user_id[score_rows])
        assert train.origin[fit_rows].max() < train.origin[score_rows].min()


def test_slope_from_the_first_record_ignores_a_newcomers_jump() -> None:
    # 11 days: nothing recorded, then a first record at 20% (known before joining) and
    # one point a day after it.
    completion = np.array([0, 0, 0, 0, 0, 20, 21, 22, 23, 24, 25], dtype=float)
    sequence = np.zeros((1, len(completion), len(SEQUENCE_COLUMNS)))
    sequence[0, :, pf.COMPLETION] = completion
    assert pf.slope_growth(sequence, (10,), 10, from_first_record=True)[0, 0] == pytest.approx(10)
    assert pf.slope_growth(sequence, (10,), 10, from_first_record=False)[0, 0] == pytest.approx(25)
    sequence[0, :, pf.COMPLETION] = 99.0  # growth stops at 100
    sequence[0, 0, pf.COMPLETION] = 89.0
    assert pf.slope_growth(sequence, (30,), 10, from_first_record=False)[0, 0] == pytest.approx(1)


def test_spec_trains_and_reports_against_the_baselines(
    trained: Trained, params: pf.ProgressForecasterParams
) -> None:
    report = trained.outcome.report
    for method in (
        "model",
        "baseline_last_value",
        "baseline_recent_slope",
        "baseline_slope_since_first_record",
        "baseline_cohort_growth",
    ):
        assert {f"mae_{h}d" for h in params.horizons_days} | {"mae_mean"} <= set(report[method])
    assert {f"coverage_{h}d" for h in params.horizons_days} <= set(report["model"])
    assert len(report["backtest"]) == 3
    assert "against_truth" in report
    # Even a tiny model beats "completion stays where it is".
    assert report["model"]["mae_mean"] < report["baseline_last_value"]["mae_mean"]
    assert "rolling-origin backtest" in trained.outcome.markdown
    assert trained.outcome.higher_is_better is False
    assert trained.study.trials[0].intermediate_values  # the pruning callback reported


def test_pyfunc_forecasts_from_builder_output(
    trained: Trained, frames: SourceFrames, dataset: pf.ForecastData
) -> None:
    students = sorted(dataset.latest.user_id)[:3]
    rows = daily_sequences(frames.for_users(students), AS_OF)  # the builder's default window
    out = trained.outcome.python_model.predict(None, rows)
    assert list(out["user_id"]) == students
    columns = [c for c in out.columns if c.startswith("completion_p")]
    assert columns == [pf.output_column(q, h) for h in (30, 60) for q in (0.1, 0.5, 0.9)]
    forecast = out[columns].to_numpy().reshape(len(out), 2, 3)
    now = out["completion_now"].to_numpy()[:, None, None]
    assert (np.diff(forecast, axis=2) >= 0).all()  # quantiles in order
    assert (np.diff(forecast, axis=1) >= 0).all()  # never lower further ahead
    assert ((forecast >= now) & (forecast <= 100)).all()
    # One student alone gets the same forecast as among others.
    alone = trained.outcome.python_model.predict(None, rows[rows["user_id"] == students[1]])
    np.testing.assert_allclose(alone[columns].to_numpy()[0], out[columns].to_numpy()[1])


def test_more_study_raises_the_forecast(trained: Trained, dataset: pf.ForecastData) -> None:
    """Behaviour: the same days with 50% more minutes and one more login on each active
    day never lower the median at the longest horizon (built into the network: see the
    next test), and raise it for most students (the size of the rise is learnt, asked for
    by a training penalty)."""
    rows = dataset.latest.rows
    assert rows is not None
    more = rows.copy()
    active = more["study_minutes"] > 0
    more.loc[active, "study_minutes"] *= 1.5
    more.loc[active, "logins"] += 1
    model = trained.outcome.python_model
    column = pf.output_column(0.5, 60)
    base, raised = model.predict(None, rows)[column], model.predict(None, more)[column]
    studying = rows.groupby("user_id")["study_minutes"].sum().sort_index().to_numpy() > 0
    change = (raised - base).to_numpy()[studying]
    assert (change >= -1e-4).all()  # float32 rounding, in percentage points
    assert (change > 0.01).mean() > 0.5


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    more=st.lists(st.floats(0.0, 3.0), min_size=9, max_size=9),
)
def test_the_network_never_lowers_a_forecast_for_more_study(seed: int, more: list[float]) -> None:
    """By construction, whatever the weights: raising any study input (the standardised
    active share, minutes and logins) never lowers any output of any horizon or quantile,
    and the forecast's post-processing (sort, running maximum, clip) keeps that order."""
    torch.manual_seed(seed)
    net = pf.ForecastNet(5, 7, 9, hidden_size=8, layers=1, dropout=0.0, horizons=2, quantiles=3)
    with torch.no_grad():  # weights far from their start, of either sign
        for parameter in net.parameters():
            parameter.normal_(0.0, 2.0)
    daily, facts, study = torch.randn(4, 10, 5), torch.randn(4, 7), torch.randn(4, 9)
    with torch.inference_mode():
        before = net.eval()(daily, facts, study)
        after = net(daily, facts, study + torch.tensor(more))
    assert (after - before >= -1e-5).all()

    def ordered(growth: torch.Tensor) -> np.ndarray:  # as `Forecaster.predict` orders it
        return np.maximum.accumulate(np.sort(growth.numpy(), axis=2), axis=1)

    assert (ordered(after) - ordered(before) >= -1e-5).all()


# -- the promotion gate's checks -----------------------------------------------------------


def served(trained: Trained) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The trained model's predict as the gate calls it (a DataFrame in, a DataFrame out)."""
    model = trained.outcome.python_model
    return lambda frame: model.predict(None, frame)


def test_slices_cover_first_subject_tenure_and_recent_activity(
    trained: Trained, ctx: TrainingContext, dataset: pf.ForecastData, frames: SourceFrames
) -> None:
    # Every student of the 120-day fixture joined under 60 days before the hold-out origin.
    joined_by = ctx.params | {"promotion": {**ctx.params["promotion"], "new_student_days": 45}}
    slices = pf.SPEC.slice_reports(replace(ctx, params=joined_by), dataset, served(trained))
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
    trained: Trained, ctx: TrainingContext, dataset: pf.ForecastData
) -> None:
    with pytest.raises(HoldoutError, match="re-freeze"):
        pf.SPEC.slice_reports(ctx, replace(dataset, holdout_slices=None), served(trained))


def test_more_study_edits_only_the_active_days_of_the_window(frames: SourceFrames) -> None:
    origin = AS_OF - timedelta(days=60)
    before = frames["study_activity"]
    after = pf.with_more_study(frames, origin, 28)["study_activity"]
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
    trained: Trained, ctx: TrainingContext, dataset: pf.ForecastData
) -> None:
    checks = pf.SPEC.behaviour_checks(ctx, dataset, served(trained))
    assert set(checks) == {
        "more study raises the forecast",
        "more study does not lower the forecast",
    }
    assert all(ok for ok, _ in checks.values()), checks
    assert "hold-out students" in checks["more study raises the forecast"][1]

    broken = pf.SPEC.behaviour_checks(ctx, dataset, reversing_study(served(trained)))
    assert not broken["more study raises the forecast"][0], broken
    assert not broken["more study does not lower the forecast"][0], broken


def test_request_samples_are_single_students_the_model_forecasts(
    trained: Trained, dataset: pf.ForecastData, params: pf.ProgressForecasterParams
) -> None:
    samples = pf.SPEC.request_samples(dataset, 5)
    assert len(samples) == 5
    predict = served(trained)
    for request in samples:
        assert request["user_id"].nunique() == 1
        assert list(request.columns) == list(dataset.latest.rows.columns)  # type: ignore[union-attr]
        assert len(request) == params.window_days
        out = predict(request)
        assert len(out) == 1 and out["user_id"].iloc[0] == request["user_id"].iloc[0]
        assert out[pf.output_column(0.5, 60)].notna().all()
    assert len(pf.SPEC.request_samples(dataset, 10_000)) == len(dataset.holdout)
