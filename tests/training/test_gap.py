"""Gap closed: 0 at the best baseline, 1 at the oracle, the best baseline chosen on the
whole hold-out, and an interval that resamples whole students."""

from __future__ import annotations

import numpy as np
import pytest

from training.gap import Scorer, gap_closed

STUDENTS = 200
ROWS_PER_STUDENT = 5


def _scorer(model: float) -> Scorer:
    """Scores: oracle 1, baselines 0.4 and 0.6, the model at `model`, each shifted by the
    same amount on every row (a shift all methods share)."""
    shift = np.linspace(-0.1, 0.1, STUDENTS * ROWS_PER_STUDENT)
    rows = {
        "oracle": 1.0 + shift,
        "baseline_weak": 0.4 + shift,
        "baseline_strong": 0.6 + shift,
        "model": model + shift,
    }

    def score(picked: np.ndarray) -> dict[str, float]:
        return {name: float(values[picked].mean()) for name, values in rows.items()}

    return score


GROUPS = np.repeat(np.arange(STUDENTS), ROWS_PER_STUDENT)
BASELINES = ["baseline_weak", "baseline_strong"]


@pytest.mark.parametrize(("model", "closed"), [(0.6, 0.0), (0.8, 0.5), (1.0, 1.0), (0.4, -0.5)])
def test_gap_is_measured_from_the_best_baseline_to_the_oracle(model: float, closed: float) -> None:
    gap = gap_closed(GROUPS, _scorer(model), BASELINES, seed=1, resamples=200)
    assert gap.baseline == "baseline_strong"
    assert gap.value == pytest.approx(closed)
    # A shift shared by every method leaves the gap alone: no width without noise.
    assert gap.low == pytest.approx(closed) and gap.high == pytest.approx(closed)


def test_lower_is_better_metrics_use_the_lowest_baseline() -> None:
    def errors(picked: np.ndarray) -> dict[str, float]:
        return {"oracle": 1.0, "baseline_weak": 5.0, "baseline_strong": 3.0, "model": 2.0}

    gap = gap_closed(GROUPS, errors, BASELINES, higher_is_better=False, seed=1, resamples=50)
    assert gap.baseline == "baseline_strong"
    assert gap.value == pytest.approx(0.5)


def noisy_model(model_rows: np.ndarray) -> Scorer:
    """Oracle 1, baselines 0.4 and 0.6, the model the mean of its rows' scores."""

    def score(picked: np.ndarray) -> dict[str, float]:
        return {
            "oracle": 1.0,
            "baseline_weak": 0.4,
            "baseline_strong": 0.6,
            "model": float(model_rows[picked].mean()),
        }

    return score


def test_the_interval_covers_the_value_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    model_rows = 0.8 + rng.normal(0, 0.3, len(GROUPS))

    score = noisy_model(model_rows)

    first = gap_closed(GROUPS, score, BASELINES, seed=7, resamples=300)
    again = gap_closed(GROUPS, score, BASELINES, seed=7, resamples=300)
    assert first == again
    assert first.low < first.value < first.high
    assert 0.0 < first.high - first.low < 0.5


def test_no_room_between_baseline_and_oracle_is_not_a_number() -> None:
    def level(picked: np.ndarray) -> dict[str, float]:
        return {"oracle": 0.6, "baseline_weak": 0.4, "baseline_strong": 0.6, "model": 0.7}

    gap = gap_closed(GROUPS, level, BASELINES, seed=1, resamples=50)
    assert np.isnan(gap.value) and np.isnan(gap.low)


def test_students_are_resampled_whole() -> None:
    """The model's rows share a per-student effect: resampling students gives a wider
    interval than pretending each row were a student of its own."""
    rng = np.random.default_rng(5)
    model_rows = 0.8 + np.repeat(rng.normal(0, 0.3, STUDENTS), ROWS_PER_STUDENT)

    score = noisy_model(model_rows)

    by_student = gap_closed(GROUPS, score, BASELINES, seed=7, resamples=300)
    by_row = gap_closed(np.arange(len(GROUPS)), score, BASELINES, seed=7, resamples=300)
    assert by_student.high - by_student.low > 1.5 * (by_row.high - by_row.low)
