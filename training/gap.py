"""How much of the achievable gap a model closes on synthetic data: (model - best
baseline) / (oracle - best baseline), where the oracle is the best prediction of the
same label the generator's hidden state allows. 0 is no better than the baseline, 1 is
as good as the hidden state allows. The same formula holds for a metric where lower is
better (both differences change sign).

The interval resamples whole students (a student's rows move together: they share the
student's ability), with scipy's bootstrap (percentile method, seeded)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 1000
LEVEL = 0.95

# Per-method metric of the rows at the given indices (repeats allowed).
Scorer = Callable[[np.ndarray], dict[str, float]]


@dataclass(frozen=True)
class Gap:
    """Gap closed on the whole hold-out, with its bootstrap interval."""

    value: float
    low: float
    high: float
    baseline: str  # the best baseline on the whole hold-out, fixed for every resample

    def report(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _closed(scores: dict[str, float], model: str, baseline: str, oracle: str) -> float:
    room = scores[oracle] - scores[baseline]
    if not np.isfinite(room) or room == 0:
        return float("nan")
    return (scores[model] - scores[baseline]) / room


def gap_closed(
    groups: np.ndarray,
    score: Scorer,
    baselines: Sequence[str],
    *,
    higher_is_better: bool = True,
    model: str = "model",
    oracle: str = "oracle",
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Gap:
    """Gap closed by `model` over the best of `baselines` towards `oracle`, with a
    `LEVEL` interval over the distinct `groups` (students) of the rows."""
    everything = np.arange(len(groups))
    whole = score(everything)
    pick = max if higher_is_better else min
    baseline = pick(baselines, key=lambda name: whole[name])
    value = _closed(whole, model, baseline, oracle)
    students, row_group = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(row_group == g) for g in range(len(students))]

    def statistic(drawn: np.ndarray) -> float:
        rows = np.concatenate([rows_of[int(g)] for g in drawn])
        return _closed(score(rows), model, baseline, oracle)

    if len(students) < 2 or not np.isfinite(value):
        return Gap(value, float("nan"), float("nan"), baseline)
    interval = stats.bootstrap(
        (np.arange(len(students)),),
        statistic,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return Gap(value, float(interval.low), float(interval.high), baseline)
