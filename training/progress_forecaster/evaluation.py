"""How a progress forecaster is judged: the baselines, the metrics, the hold-out report
with its Markdown and plots, the comparison with the generator's truth, and the promotion
gate's slices and behavioural checks.

Baselines, on the same examples: last value; the recent slope carried forward (the
issue's, counting a newcomer's first record as growth); the slope from the first record
(a stronger variant); completion now plus the training students' mean growth at a
similar completion level.

The promotion gate (`registry.gate`) compares hold-out slices (first enrolled subject,
new vs long-standing, low vs high recent study;
`training.progress_forecaster.data.slice_table`), runs the issue's behavioural test on
the hold-out students (more study, rebuilt from edited `study_activity` rows, must raise
the forecast) and times single-student requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from core.exceptions import HoldoutError
from features.frames import SourceFrames, from_snapshot
from features.progress import TABLES as PROGRESS_TABLES
from features.progress import daily_sequences
from training import reports
from training.metrics import forecast_errors
from training.progress_forecaster.data import SLICE_COLUMNS, Examples, ForecastData
from training.progress_forecaster.inference import CARD, output_column, slope_growth
from training.progress_forecaster.params import ProgressForecasterParams

# -- baselines -----------------------------------------------------------------------------


def last_value(examples: Examples, horizons: tuple[int, ...]) -> np.ndarray:
    """Baseline: completion stays where it is."""
    return np.repeat(examples.completion[:, None], len(horizons), axis=1)


def recent_slope(
    examples: Examples, horizons: tuple[int, ...], days: int, from_first_record: bool = False
) -> np.ndarray:
    """Baseline: the daily growth over the last `days` carried forward, clipped to 0-100
    (the issue's baseline; `from_first_record` is the stronger variant that does not
    count a newcomer's first record as growth)."""
    return examples.completion[:, None] + slope_growth(
        examples.sequence, horizons, days, from_first_record
    )


@dataclass
class CohortGrowth:
    """Baseline: completion now plus the training students' mean growth over h days at a
    similar completion level (tenths of the syllabus; the overall mean when a level is
    empty)."""

    growth: np.ndarray  # [levels, horizons]

    LEVELS = 10

    @classmethod
    def level(cls, completion: np.ndarray) -> np.ndarray:
        return np.clip((completion // (100 / cls.LEVELS)).astype(int), 0, cls.LEVELS - 1)

    @classmethod
    def fit(cls, train: Examples) -> CohortGrowth:
        growth = train.target - train.completion[:, None]
        level = cls.level(train.completion)
        overall = np.nanmean(growth, axis=0)
        table = np.array(
            [
                np.nanmean(growth[level == k], axis=0) if (level == k).any() else overall
                for k in range(cls.LEVELS)
            ]
        )
        return cls(table)

    def predict(self, examples: Examples) -> np.ndarray:
        now = examples.completion[:, None]
        return np.clip(now + self.growth[self.level(examples.completion)], 0, 100)


def forecast_quantiles(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    examples: Examples,
    p: ProgressForecasterParams,
) -> np.ndarray:
    """A logged model's forecast [n, horizons, quantiles] for `examples`, from the builder
    rows it is given in serving."""
    assert examples.rows is not None, "examples without their builder rows"
    out = predict(examples.rows).set_index("user_id").reindex(examples.user_id)
    columns = [output_column(q, h) for h in p.horizons_days for q in p.quantiles]
    return out[columns].to_numpy(dtype=float).reshape(len(examples), len(p.horizons_days), -1)


def baseline_forecasts(
    cohort: CohortGrowth, examples: Examples, p: ProgressForecasterParams
) -> dict[str, np.ndarray]:
    """Point forecasts [n, horizons] of every baseline."""
    return {
        "baseline_last_value": last_value(examples, p.horizons_days),
        "baseline_recent_slope": recent_slope(examples, p.horizons_days, p.slope_days),
        "baseline_slope_since_first_record": recent_slope(
            examples, p.horizons_days, p.slope_days, from_first_record=True
        ),
        "baseline_cohort_growth": cohort.predict(examples),
    }


# -- metrics -------------------------------------------------------------------------------


def horizon_errors(
    truth: np.ndarray,
    point: np.ndarray,
    horizons: tuple[int, ...],
    interval: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """MAE per horizon and their mean (plus interval coverage and width per horizon when
    an interval is given), over the examples whose label at that horizon is observed."""
    metrics: dict[str, float] = {}
    for k, h in enumerate(horizons):
        seen = ~np.isnan(truth[:, k])
        if not seen.any():
            continue
        bounds = None if interval is None else (interval[0][seen, k], interval[1][seen, k])
        for name, value in forecast_errors(truth[seen, k], point[seen, k], bounds).items():
            metrics[f"{name}_{h}d"] = value
    maes = [v for k, v in metrics.items() if k.startswith("mae_")]
    metrics["mae_mean"] = float(np.mean(maes)) if maes else float("nan")
    metrics["n"] = float(len(truth))
    return metrics


def model_errors(
    quantiles: np.ndarray, truth: np.ndarray, p: ProgressForecasterParams
) -> dict[str, float]:
    """The model's metrics against `truth` [n, horizons]: its median's MAE, with the
    coverage and width of its interval (the outer quantiles)."""
    return horizon_errors(
        truth,
        quantiles[:, :, p.median],
        p.horizons_days,
        (quantiles[:, :, 0], quantiles[:, :, -1]),
    )


def score(
    quantiles: np.ndarray,
    cohort: CohortGrowth,
    examples: Examples,
    truth: np.ndarray,
    p: ProgressForecasterParams,
) -> dict[str, dict[str, float]]:
    """Metrics of the model (its median, with its interval) and of each baseline against
    `truth` [n, horizons]."""
    report = {"model": model_errors(quantiles, truth, p)}
    for name, point in baseline_forecasts(cohort, examples, p).items():
        report[name] = horizon_errors(truth, point, p.horizons_days)
    return report


def truth_completion(
    truth_dir: Path, users: np.ndarray, horizons: tuple[int, ...]
) -> np.ndarray | None:
    """The generator's true completion of `users` at each horizon past the snapshot's end
    (None without a ground truth: on a real Supabase)."""
    path = truth_dir / "students.parquet"
    if not path.exists():
        return None
    students = pd.read_parquet(path).set_index("user_id")
    columns = [f"completion_plus_{h}d" for h in horizons]
    if not set(columns) <= set(students.columns):
        return None
    return students.reindex(users)[columns].to_numpy(dtype=float)


# -- the report ----------------------------------------------------------------------------


def evaluate(
    data: ForecastData,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    p: ProgressForecasterParams,
    truth_dir: Path | None,
) -> tuple[dict[str, Any], str]:
    """A model's report next to the baselines: on the hold-out, in a rolling-origin
    backtest of the hold-out students, and (synthetic data) against the generator's
    true completion after the snapshot; and its Markdown tables."""
    cohort = CohortGrowth.fit(data.train)
    holdout = data.holdout
    report: dict[str, Any] = score(
        forecast_quantiles(predict, holdout, p), cohort, holdout, holdout.target, p
    )
    report["backtest"] = {
        origin: {
            name: metrics["mae_mean"]
            for name, metrics in score(
                forecast_quantiles(predict, examples, p), cohort, examples, examples.target, p
            ).items()
        }
        | {"n": float(len(examples))}
        for origin, examples in data.backtest.items()
    }
    latest = data.latest
    truth = None
    if truth_dir is not None:
        truth = truth_completion(truth_dir, latest.user_id, p.horizons_days)
    if truth is not None:
        report["against_truth"] = score(
            forecast_quantiles(predict, latest, p), cohort, latest, truth, p
        )

    methods = ["model", *(k for k in report if k.startswith("baseline_"))]
    columns = [
        *(f"mae_{h}d" for h in p.horizons_days),
        "mae_mean",
        *(f"coverage_{h}d" for h in p.horizons_days),
        "n",
    ]
    markdown = reports.markdown_table(
        f"{CARD.name}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d}; "
        f"MAE in percentage points, coverage of the {p.interval_level:.0%} interval)",
        {k: report[k] for k in methods},
        columns,
    )
    markdown += "\n" + reports.markdown_table(
        "rolling-origin backtest of the hold-out students (mean MAE over the horizons "
        "observed by the as-of day)",
        report["backtest"],
        [*methods, "n"],
    )
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            "against the generator's true completion after the snapshot (from the as-of day)",
            report["against_truth"],
            columns,
        )
    return report, markdown


def forecast_plots(
    folder: Path,
    report: dict[str, Any],
    methods: list[str],
    p: ProgressForecasterParams,
    quantiles: np.ndarray,
    target: np.ndarray,
) -> list[Path]:
    """MAE per horizon (model and baselines), the backtest's MAE per origin, and the
    model's forecast against the completion reached at the longest horizon."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(methods)
    backtest = report["backtest"]
    for i, name in enumerate(methods):
        maes = [report[name].get(f"mae_{h}d", np.nan) for h in p.horizons_days]
        axes[0].bar(np.arange(len(maes)) + i * width, maes, width, label=name)
        axes[1].plot([backtest[o][name] for o in backtest], marker="o", label=name)
    axes[0].set_xticks(np.arange(len(p.horizons_days)) + 0.4, [f"+{h} d" for h in p.horizons_days])
    axes[0].set(ylabel="MAE (completion %)", title="Hold-out MAE per horizon")
    axes[0].legend(fontsize=7)
    axes[1].set_xticks(np.arange(len(backtest)), list(backtest), rotation=30)
    axes[1].set(xlabel="origin", ylabel="mean MAE", title="Rolling-origin backtest")
    last = len(p.horizons_days) - 1
    axes[2].errorbar(
        target[:, last],
        quantiles[:, last, p.median],
        yerr=[
            quantiles[:, last, p.median] - quantiles[:, last, 0],
            quantiles[:, last, -1] - quantiles[:, last, p.median],
        ],
        fmt=".",
        alpha=0.3,
        markersize=3,
    )
    axes[2].plot([0, 100], [0, 100], linestyle=":", color="grey")
    axes[2].set(
        xlabel="completion reached (%)",
        ylabel="forecast median and interval (%)",
        title=f"+{p.horizons_days[last]} days, hold-out",
    )
    figure.tight_layout()
    path = folder / "forecasts.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


# -- the promotion gate's checks -----------------------------------------------------------


def slice_reports(
    data: ForecastData,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    p: ProgressForecasterParams,
    new_days: float,
) -> dict[str, dict[str, float]]:
    """Hold-out metrics per slice the promotion gate compares (each with `n`): new vs
    long-standing students (joined under `new_days` (`promotion.new_student_days`) before
    the origin vs at least), low vs high recent activity (study minutes over the 30 days
    up to the origin below vs at least the hold-out students' median), and subject.

    A completion forecast is per student over all the student's enrolled subjects
    (`user_progress` is one number for the whole syllabus), so there is no subject
    per example; a student is put in the slice of the subject first enrolled in
    (`slice_table`), the syllabus that has been under way longest. That still
    catches a challenger that gets worse for, say, the students who started with
    Biology; students of several subjects count once, under their first."""
    slices = getattr(data, "holdout_slices", None)
    if slices is None or not set(SLICE_COLUMNS) <= set(slices.columns):
        raise HoldoutError(
            f"{CARD.name}: the frozen hold-out lacks the slice columns {list(SLICE_COLUMNS)}; "
            f"re-freeze it with `prepiq holdout freeze --model {CARD.key}`"
        )
    holdout = data.holdout
    quantiles = forecast_quantiles(predict, holdout, p)
    per_student = slices.reindex(holdout.user_id)
    joined = per_student["days_since_joined"].to_numpy(dtype=float)
    activity = per_student["study_minutes_last_30d"].to_numpy(dtype=float)
    median = float(np.median(activity))
    subject = per_student["subject"].to_numpy(dtype=float)
    masks = {
        f"subject {int(name)}": subject == name
        for name in sorted(np.unique(subject[~np.isnan(subject)]))
    }
    masks |= {
        "new students": joined < new_days,
        "long-standing students": joined >= new_days,
        "low recent activity": activity < median,
        "high recent activity": activity >= median,
    }
    return {
        name: model_errors(quantiles[rows], holdout.target[rows], p)
        for name, rows in masks.items()
        if rows.any()
    }


# The behavioural probe (`behaviour_checks`).
MORE_STUDY_FACTOR = 1.5  # minutes of every active day of the window times this
RISE_POINTS = 0.01  # a median higher by more than this has risen (percentage points)
FALL_TOLERANCE_POINTS = 0.5  # the shape is learnt: a dip this small is tolerated
MAX_FALL_SHARE = 0.05  # of the probed students, at most this share may fall by more


def with_more_study(
    frames: SourceFrames, origin: datetime, window_days: int, factor: float = MORE_STUDY_FACTOR
) -> SourceFrames:
    """The frames with more study in the `window_days` days ending on the origin day:
    `study_activity` rows with minutes get `factor` times the minutes and one more login
    (the counterfactual of the behavioural checks; other days and tables as they were)."""
    activity = frames["study_activity"].copy()
    day = origin.date()
    more = (
        (activity["activity_date"] > day - timedelta(days=window_days))
        & (activity["activity_date"] <= day)
        & (activity["study_minutes"] > 0)
    )
    activity["study_minutes"] = activity["study_minutes"].astype(float)
    activity.loc[more, "study_minutes"] *= factor
    activity.loc[more, "logins"] = activity.loc[more, "logins"] + 1
    return SourceFrames(frames.tables | {"study_activity": activity})


def behaviour_checks(
    snapshot_dir: Path,
    data: ForecastData,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    p: ProgressForecasterParams,
) -> dict[str, tuple[bool, str]]:
    """The behavioural test of the training issue, "more study raises the forecast",
    on the hold-out students at the hold-out origin: every active day of the input
    window gets `MORE_STUDY_FACTOR` times the minutes and one more login, in the
    snapshot's `study_activity` rows; both inputs are rebuilt by
    `features.progress.daily_sequences` (the builder serving uses), so streaks, tests
    and completion stay as they were. Judged on the median at the longest horizon, for
    the students who studied in the window and whose median is below 100 (room to
    rise): it rises (by over `RISE_POINTS`) for most of them, and falls (by over
    `FALL_TOLERANCE_POINTS`) for at most `MAX_FALL_SHARE` of them."""
    origin = data.holdout_origin
    frames = from_snapshot(snapshot_dir, PROGRESS_TABLES).for_users(data.holdout.user_id.tolist())
    column = output_column(0.5, max(p.horizons_days))
    base_rows = daily_sequences(frames, origin, p.window_days)
    more_rows = daily_sequences(
        with_more_study(frames, origin, p.window_days), origin, p.window_days
    )
    base = predict(base_rows).set_index("user_id")[column]
    raised = predict(more_rows).set_index("user_id")[column].reindex(base.index)
    studied = base_rows.groupby("user_id")["study_minutes"].sum().reindex(base.index) > 0
    probed = (studied & (base < 100.0 - RISE_POINTS)).to_numpy()
    change = (raised - base).to_numpy(dtype=float)[probed]
    name_rise = "more study raises the forecast"
    name_fall = "more study does not lower the forecast"
    if not len(change):
        why = "no hold-out student studied in the window with a forecast below 100"
        return {name_rise: (False, why), name_fall: (False, why)}
    rise_share = float((change > RISE_POINTS).mean())
    fall_share = float((change < -FALL_TOLERANCE_POINTS).mean())
    where = (
        f"of {len(change)} hold-out students, the +{max(p.horizons_days)} d median with "
        f"{MORE_STUDY_FACTOR:g}x minutes and one more login per active day"
    )
    return {
        name_rise: (
            rise_share > 0.5,
            f"rises for {rise_share:.0%} {where} (mean change "
            f"{float(change.mean()):+.2f} points; needs over 50%)",
        ),
        name_fall: (
            fall_share <= MAX_FALL_SHARE,
            f"falls by over {FALL_TOLERANCE_POINTS:g} points for {fall_share:.0%} {where} "
            f"(lowest change {float(change.min()):+.2f}; at most {MAX_FALL_SHARE:.0%} "
            "allowed)",
        ),
    }


def request_samples(data: ForecastData, count: int) -> list[pd.DataFrame]:
    """Single-student requests as serving sends them: each of `count` hold-out
    students' `daily_sequences` rows at the hold-out origin (the gate times `predict`
    on them)."""
    rows = data.holdout.rows
    assert rows is not None, "hold-out examples without their builder rows"
    students = sorted(set(data.holdout.user_id.tolist()))[:count]
    return [rows[rows["user_id"] == s].reset_index(drop=True) for s in students]
