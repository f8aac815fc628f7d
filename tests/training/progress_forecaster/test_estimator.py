"""Progress forecaster training: the tuning folds are by student and validate later
origins, and the spec trains end to end (tuning with pruning, the refit) and reports
against the baselines."""

from __future__ import annotations

from tests.training.progress_forecaster.conftest import Trained
from training.progress_forecaster.data import ForecastData
from training.progress_forecaster.estimator import time_ordered_folds
from training.progress_forecaster.params import ProgressForecasterParams


def test_tuning_folds_are_by_student_and_validate_later(
    dataset: ForecastData, params: ProgressForecasterParams
) -> None:
    train = dataset.train
    folds = time_ordered_folds(train, params, seed=42)
    assert len(folds) == params.cv_folds
    for fit_rows, score_rows in folds:
        assert len(fit_rows) and len(score_rows)
        assert set(train.user_id[fit_rows]).isdisjoint(train.user_id[score_rows])
        assert train.origin[fit_rows].max() < train.origin[score_rows].min()


def test_spec_trains_and_reports_against_the_baselines(
    trained: Trained, params: ProgressForecasterParams
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
