"""What serving loads of the focus-area identifier: its card and the logged pyfunc (the
fitted classifier, its decision threshold and the improvement suggestions). Nothing of
training is imported here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from features.focus import FEATURE_COLUMNS, feature_matrix
from training.card import ModelCard

CARD = ModelCard(
    key="focus-area", name="prepiq-focus-area", main_metric="f1", higher_is_better=True
)
REQUIREMENTS = ["mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle"]
INPUT_COLUMNS = ["user_id", "topic_id", *FEATURE_COLUMNS]

# What to practise, from the answer patterns behind a weak topic: (feature, at least, advice).
PRACTICE_ADVICE = (
    (
        "repeated_wrong_option_share",
        0.08,
        "the same wrong option again: review the worked solutions",
    ),
    ("rushed_wrong_share", 0.15, "quick wrong answers: work questions untimed before timed"),
    ("slow_answer_share", 0.30, "slow answers: timed practice questions"),
    ("days_since_last_attempt", 21.0, "not practised for weeks: spaced revision"),
)
DEFAULT_ADVICE = "targeted practice questions on this topic"


def suggestion_columns(
    x: np.ndarray, probability: np.ndarray, target_accuracy: float, groups: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Improvement suggestions for the rows of feature matrix `x`
    (`features.focus.feature_matrix`): the expected gain of bringing a topic up to the
    target accuracy (exam-score points out of 100 for its subject, as the topic's syllabus
    share times the accuracy gap, discounted by the weak probability), what to practise,
    and the order to take the topics in (per student when `groups` holds user ids).
    Numpy throughout: serving computes this on every request."""
    column = {name: x[:, i] for i, name in enumerate(FEATURE_COLUMNS)}
    gap = (target_accuracy - column["student_shrunk_accuracy"]).clip(0.0, 1.0)
    gain = 100.0 * column["syllabus_weight"] * gap * probability
    advice = np.full(len(x), DEFAULT_ADVICE, dtype=object)
    for name, at_least, text in reversed(PRACTICE_ADVICE):  # the first match wins
        advice = np.where(column[name] >= at_least, text, advice)
    return {
        "expected_score_gain": gain.round(3),
        "practice": advice,
        "priority": priority_ranks(-gain, groups),
    }


def priority_ranks(key: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """1, 2, ... by ascending `key` within each group, ties in row order (what pandas'
    `groupby(groups).rank(method="first")` gives)."""
    codes = np.zeros(len(key), dtype=np.int64) if groups is None else pd.factorize(groups)[0]
    order = np.lexsort((key, codes))  # stable: equal keys keep their row order
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    first_of_group = np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    ranks = np.empty(len(key), dtype=np.int64)
    ranks[order] = np.arange(len(key)) - first_of_group + 1
    return ranks


class FocusAreaPyfunc(PythonModel):
    """What serving loads: the fitted classifier, its decision threshold and the target
    accuracy of the suggestions, in one MLflow model. Input: `features.focus.
    topic_test_stats` rows (user_id and topic_id are passed through when present)."""

    def __init__(self, estimator: Any, threshold: float, target_accuracy: float) -> None:
        self.estimator = estimator
        self.threshold = threshold
        self.target_accuracy = target_accuracy

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        keys = {c: model_input[c].to_numpy() for c in ("user_id", "topic_id") if c in model_input}
        return pd.DataFrame(self.answer(feature_matrix(model_input), keys))

    def answer(self, x: np.ndarray, keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`predict`'s columns from the feature matrix, `keys` (user_id, topic_id) passed
        through: what serving calls, with no frame built around the answer."""
        probability = self.estimator.predict_proba(x)[:, 1]
        out = dict(keys)
        out["weak_probability"] = probability
        out["is_weak"] = probability >= self.threshold
        out |= suggestion_columns(x, probability, self.target_accuracy, keys.get("user_id"))
        return out
