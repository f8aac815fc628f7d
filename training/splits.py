"""Held-out data is split by student and by time, never by row: a student is in the
training group or the hold-out group for good (a stable hash of the id and the seed), and
hold-out examples are scored at a later point in time than anything trained on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from features.frames import SourceFrames


def holdout_students(user_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The students kept out of training: the same ids for the same seed, whatever else
    is in the data, so a new snapshot does not move students between groups."""
    chosen = set()
    for user in user_ids:
        digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < fraction:
            chosen.add(user)
    return chosen


def origins(first: datetime, last: datetime, step_days: int) -> list[datetime]:
    """Points in time from `first` to `last` every `step_days` (last included)."""
    points = []
    moment = last
    while moment >= first:
        points.append(moment)
        moment -= timedelta(days=step_days)
    return sorted(points)


def group_folds(groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds that keep every student's rows in one fold."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % n_folds, strict=True))
    assignment = np.array([fold_of[g] for g in groups])
    return [
        (np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)) for k in range(n_folds)
    ]


def student_split(
    frames: SourceFrames, fraction: float, seed: int
) -> tuple[SourceFrames, SourceFrames]:
    """The training students' rows and the hold-out students' rows (shared tables whole):
    each group's examples are built from its own students only."""
    users = frames["users"]["id"].tolist()
    held_out = holdout_students(users, fraction, seed)
    return frames.for_users(u for u in users if u not in held_out), frames.for_users(held_out)


def first_origin(frames: SourceFrames, first_origin_days: int) -> datetime:
    """The earliest point in time worth an example: some days after the first student joined."""
    joined: datetime = frames["users"]["created_at"].min().to_pydatetime()
    return joined + timedelta(days=first_origin_days)


def training_origins(
    frames: SourceFrames, first_origin_days: int, last: datetime, step_days: int
) -> list[datetime]:
    """Training origins every `step_days` from `first_origin` up to `last` (the latest
    origin whose labels close before the hold-out's)."""
    return origins(first_origin(frames, first_origin_days), last, step_days)


@dataclass(frozen=True)
class WindowSplit:
    """Students and points in time of a model labelled over a window after each origin:
    hold-out students at the last origin whose window has closed; training students at
    origins whose windows closed before that one opened."""

    training: SourceFrames
    holdout: SourceFrames
    train_origins: list[datetime]
    holdout_origin: datetime


class WindowedLabel(Protocol):
    """The params of a model labelled over a window after each origin (the focus-area
    identifier's and the topic recommender's `params.yaml` sections)."""

    @property
    def label_window_days(self) -> int: ...
    @property
    def first_origin_days(self) -> int: ...
    @property
    def origin_step_days(self) -> int: ...
    @property
    def holdout_fraction(self) -> float: ...


def window_split(frames: SourceFrames, as_of: datetime, p: WindowedLabel, seed: int) -> WindowSplit:
    """Split by student and by time for a label over `p.label_window_days` after each
    origin."""
    window_days = p.label_window_days
    holdout_origin = as_of - timedelta(days=window_days)
    training, holdout = student_split(frames, p.holdout_fraction, seed)
    last = holdout_origin - timedelta(days=window_days)
    return WindowSplit(
        training=training,
        holdout=holdout,
        train_origins=training_origins(frames, p.first_origin_days, last, p.origin_step_days),
        holdout_origin=holdout_origin,
    )
