"""The focus-area oracle: the chance the label comes out weak given the student's true
state, and the F1 gap the model closes towards it, on the small seeded snapshot with its
ground truth."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.training.focus_area.test_data import PARAMS
from training.focus_area.evaluation import oracle_weak_probability
from training.model_spec import Outcome


def test_the_oracle_is_the_binomial_chance_of_a_weak_result() -> None:
    rows = pd.DataFrame(
        {"later_answers": [10, 12, 10, 10], "expected_accuracy": [0.5, 0.5, 0.9, 0.2]}
    )
    weak = oracle_weak_probability(rows, PARAMS.replaced(weak_threshold=0.5))
    # Fewer than 5 of 10 right at even odds: (1 + 10 + 45 + 120 + 210) / 2**10.
    assert weak[0] == pytest.approx(386 / 1024)
    # Fewer than 6 of 12: sum of C(12, k) for k <= 5, over 2**12.
    assert weak[1] == pytest.approx((1 + 12 + 66 + 220 + 495 + 792) / 4096)
    assert weak[2] < weak[0] < weak[3]


def test_the_report_has_the_oracle_and_the_gap_closed(outcome: Outcome) -> None:
    report = outcome.report
    oracle, gap = report["oracle"], report["gap_closed"]["f1"]
    assert oracle["n"] == report["against_truth"]["model"]["n"] > 0
    assert 0.0 <= oracle["f1"] <= 1.0
    assert gap["low"] < gap["high"]  # an interval over the hold-out students
    assert "Gap closed on F1" in outcome.markdown
    assert "oracle" not in outcome.baselines()  # never a baseline the gate compares
