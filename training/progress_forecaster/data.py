"""The progress forecaster's dataset: examples, their labels and the split.

Examples are (student, origin) pairs: the daily sequence of the `window_days` ending at
the origin is the input; the label is the completion the student had reached at
origin + h, read from the source's `user_progress` (the last recorded value on or before
that day; the app never lowers completion, so carrying it forward is exact). The
generator's ground truth is never a training input; it is a second yardstick.

Splits, by student and by time: the hold-out students are scored at the latest origin
whose +90 day label is observed (as_of - 90 days); training students at rolling origins
every `origin_step_days` before it. With 180 days of history that gives about ten
training origins per student: the history is too short for anything but overlapping
origins, and the overlap is what makes enough examples (consecutive origins of one student
are correlated, so cross-validation keeps every student in one fold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from features.frames import SourceFrames
from features.progress import daily_sequences
from training.progress_forecaster.inference import COMPLETION, sequence_arrays
from training.progress_forecaster.params import ProgressForecasterParams
from training.splits import first_origin, student_split, training_origins


@dataclass
class Examples:
    """(student, origin) examples as arrays: the raw daily sequence [n, window, channels]
    in `SEQUENCE_COLUMNS` order, the per-student facts [n, `STATIC_COLUMNS`], and the
    completion reached at each horizon [n, horizons] (NaN where not yet observed). `rows`
    are the builder's rows they came from (one origin's; what a logged model is given)."""

    user_id: np.ndarray
    origin: np.ndarray
    sequence: np.ndarray
    static: np.ndarray
    target: np.ndarray
    rows: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.user_id)

    @property
    def completion(self) -> np.ndarray:
        """Completion on the origin day (the last value of the sequence)."""
        return self.sequence[:, -1, COMPLETION]

    def subset(self, rows: np.ndarray) -> Examples:
        return Examples(
            self.user_id[rows],
            self.origin[rows],
            self.sequence[rows],
            self.static[rows],
            self.target[rows],
            self.rows,
        )

    @classmethod
    def concat(cls, parts: list[Examples]) -> Examples:
        """Examples of several origins (arrays only: the rows stay with each origin)."""

        def stacked(name: str) -> np.ndarray:
            return np.concatenate([getattr(part, name) for part in parts])

        return cls(
            stacked("user_id"),
            stacked("origin"),
            stacked("sequence"),
            stacked("static"),
            stacked("target"),
        )


def completion_reached(progress: pd.DataFrame, users: np.ndarray, day: date) -> np.ndarray:
    """Each student's completion on `day`: the last value recorded on or before it (NaN
    when the student has no record by then)."""
    recorded = progress[progress["recorded_on"] <= day]
    last = recorded.sort_values("recorded_on").groupby("user_id")["completion_percent"].last()
    return pd.Series(users).map(last).to_numpy(dtype=float)


def inputs_at(frames: SourceFrames, origin: datetime, p: ProgressForecasterParams) -> Examples:
    """Every student in `frames` at `origin`: the daily sequence up to it, no labels yet."""
    rows = daily_sequences(frames, origin, p.window_days)
    users, sequence, static = sequence_arrays(rows, p.window_days)
    stamp = np.full(len(users), np.datetime64(origin.replace(tzinfo=None), "s"))
    target = np.full((len(users), len(p.horizons_days)), np.nan)
    return Examples(users, stamp, sequence, static, target, rows)


def examples_at(
    frames: SourceFrames, origin: datetime, p: ProgressForecasterParams, limit: date
) -> Examples:
    """Labelled examples at `origin`: the inputs up to the origin, and the completion
    reached at origin + h for the horizons that end by `limit` (the as-of day; later ones
    stay NaN). Students without any record by the first horizon are left out (no label)."""
    examples = inputs_at(frames, origin, p)
    progress = frames["user_progress"]
    for k, h in enumerate(p.horizons_days):
        if (day := origin.date() + timedelta(days=h)) <= limit:
            examples.target[:, k] = completion_reached(progress, examples.user_id, day)
    return examples.subset(np.flatnonzero(~np.isnan(examples.target[:, 0])))


@dataclass
class ForecastData:
    """Training examples (training students, earlier origins), the hold-out (other
    students at `holdout_origin`), the hold-out students' examples at each backtest origin,
    and their sequences at the as-of day (forecasts past the snapshot, for the truth)."""

    train: Examples
    holdout: Examples
    holdout_origin: datetime
    backtest: dict[str, Examples]
    latest: Examples
    holdout_slices: pd.DataFrame | None = None  # `slice_table` of the hold-out students


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: ProgressForecasterParams, seed: int
) -> ForecastData:
    """Split by student and by time (see the module docstring)."""
    limit = as_of.date()
    longest = timedelta(days=max(p.horizons_days))
    holdout_origin = as_of - longest
    training_frames, holdout_frames = student_split(frames, p.holdout_fraction, seed)
    train_origins = training_origins(
        frames,
        p.first_origin_days,
        holdout_origin - timedelta(days=p.origin_step_days),
        p.origin_step_days,
    )
    train = Examples.concat([examples_at(training_frames, t, p, limit) for t in train_origins])
    backtest = {
        f"{moment:%Y-%m-%d}": examples_at(holdout_frames, moment, p, limit)
        for moment in sorted(as_of - timedelta(days=d) for d in p.backtest_days_before_as_of)
        if moment >= first_origin(frames, p.first_origin_days)
    }
    holdout = examples_at(holdout_frames, holdout_origin, p, limit)
    return ForecastData(
        train=train,
        holdout=holdout,
        holdout_origin=holdout_origin,
        backtest=backtest,
        latest=inputs_at(holdout_frames, as_of, p),
        holdout_slices=slice_table(holdout_frames, holdout_origin, holdout.user_id),
    )


# Hold-out columns the promotion gate slices by (never model inputs).
SLICE_COLUMNS = ("subject", "days_since_joined", "study_minutes_last_30d")
RECENT_ACTIVITY_DAYS = 30


def slice_table(frames: SourceFrames, origin: datetime, users: np.ndarray) -> pd.DataFrame:
    """What the promotion gate slices the hold-out students by, one row per student of
    `users` (in that order): the subject the student enrolled in first (earliest
    `user_subjects.enrolled_at` up to `origin`, ties by subject id; NaN without one), days
    since joining at `origin`, and study minutes over the `RECENT_ACTIVITY_DAYS` days
    ending on the origin day."""
    moment = pd.Timestamp(origin)
    enrolled = frames["user_subjects"]
    enrolled = enrolled[enrolled["enrolled_at"] <= moment].sort_values(
        ["user_id", "enrolled_at", "subject_id"]
    )
    first_subject = enrolled.groupby("user_id")["subject_id"].first()
    joined = frames["users"].set_index("id")["created_at"]
    activity = frames["study_activity"]
    day = origin.date()
    recent = activity[
        (activity["activity_date"] > day - timedelta(days=RECENT_ACTIVITY_DAYS))
        & (activity["activity_date"] <= day)
    ]
    minutes = recent.groupby("user_id")["study_minutes"].sum()
    index = pd.Index(users, name="user_id")
    return pd.DataFrame(
        {
            "subject": first_subject.reindex(index).to_numpy(dtype=float),
            "days_since_joined": (
                (moment - joined.reindex(index)).dt.total_seconds() / 86400
            ).to_numpy(dtype=float),
            "study_minutes_last_30d": minutes.reindex(index).fillna(0.0).to_numpy(dtype=float),
        },
        index=index,
    )
