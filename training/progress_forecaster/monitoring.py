"""The progress forecaster's drift and live-quality hooks for the monitoring flow
(`pipelines.monitoring`): its inputs are the daily sequences, and its served forecasts are
scored against the completion each student had reached once a horizon has passed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features import progress
from features.frames import SourceFrames
from training.live import FeatureSet, LiveMonitoring, QualityLimit, latest_per_student, served_rows
from training.progress_forecaster.data import completion_reached
from training.progress_forecaster.evaluation import horizon_errors


def forecast_due(made: pd.Timestamp, horizon: int, as_of: datetime) -> date | None:
    """The day a forecast made at `made` for `horizon` days is about, if it has passed
    by `as_of`."""
    day: date = (made + timedelta(days=horizon)).date()
    return day if day <= as_of.date() else None


def progress_quality(
    frames: SourceFrames, predictions: pd.DataFrame, as_of: datetime
) -> dict[str, float] | None:
    """The served forecasts (median and 80% interval) against the completion reached at
    each horizon that has passed by `as_of`, from each student's latest such forecast."""
    passed = [
        any(forecast_due(made, int(f["horizon_days"]), as_of) for f in response["forecasts"])
        for _, made, response in served_rows(predictions)
    ]
    latest = latest_per_student(predictions[passed])
    if latest.empty:
        return None
    rows = served_rows(latest)
    horizons = tuple(sorted({int(f["horizon_days"]) for *_, r in rows for f in r["forecasts"]}))
    truth, point, low, high = (np.full((len(latest), len(horizons)), np.nan) for _ in range(4))
    due: dict[date, list[tuple[int, int, str]]] = {}  # day -> the cells about it
    for i, (user, made, response) in enumerate(rows):
        by_horizon = {int(f["horizon_days"]): f for f in response["forecasts"]}
        for k, h in enumerate(horizons):
            day = forecast_due(made, h, as_of)
            if h in by_horizon and day is not None:
                due.setdefault(day, []).append((i, k, user))
                forecast = by_horizon[h]
                point[i, k] = forecast["completion_percent"]
                low[i, k], high[i, k] = forecast["low_percent"], forecast["high_percent"]
    # One pass over the progress rows per day, for every student due then (not per cell).
    for day, cells in due.items():
        users = np.array([user for *_, user in cells])
        reached = completion_reached(frames["user_progress"], users, day)
        for (i, k, _), value in zip(cells, reached, strict=True):
            truth[i, k] = value
    return horizon_errors(truth, point, horizons, (low, high))


class ProgressForecasterMonitoring(LiveMonitoring):
    """Drift of the daily sequences and per-student facts; live MAE of the median."""

    @property
    def features(self) -> FeatureSet:
        return FeatureSet(
            "progress_sequences",
            (*progress.SEQUENCE_COLUMNS, *progress.STATIC_COLUMNS),
            progress.TABLES,
        )

    @property
    def limit(self) -> QualityLimit:
        return QualityLimit(
            "mae_mean",
            "forecast MAE (points)",
            "progress_max_mae_points",
            floor=False,
            headline="MAE",
        )

    @property
    def outcome_tables(self) -> tuple[str, ...]:
        return ("user_progress",)

    def quality(
        self,
        frames: SourceFrames,
        predictions: pd.DataFrame,
        params: Mapping[str, Any],
        as_of: datetime,
    ) -> dict[str, float] | None:
        """The served forecasts against the completion reached (`progress_quality`)."""
        return progress_quality(frames, predictions, as_of)


MONITORING = ProgressForecasterMonitoring()
