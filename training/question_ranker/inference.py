"""What serving loads of the question-importance ranker: its card, the logged pyfunc, the
fitted heads it holds and the scorer's input it builds from `question_history` rows
(training and serving both call `candidate_features`). Nothing of training is imported
here: no Optuna, no tracking, no dataset building."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from features.questions import NUMERIC_COLUMNS, TEXT_COLUMNS, TextReference
from features.text import ENCODER_NAME, ENCODER_PACKAGE, EmbeddingCache
from training.card import ModelCard

CARD = ModelCard(
    key="question-ranker",
    name="prepiq-question-ranker",
    main_metric="ndcg_10",
    higher_is_better=True,
)
REQUIREMENTS = [
    "mlflow",
    "scikit-learn",
    "scipy",
    "pandas",
    "numpy",
    "cloudpickle",
    "torch",
    "transformers",
    "sentence-transformers",
    ENCODER_PACKAGE,
]
# Student ratings exist only since the app started, so every past cut-off sees none: a
# feature constant in training but not in serving is left out.
HISTORY_COLUMNS = tuple(c for c in NUMERIC_COLUMNS if c != "mean_rating")
NAMED_COLUMNS = (*HISTORY_COLUMNS, *TEXT_COLUMNS)  # then the embedding's dimensions
REPEAT_GAIN = 2.0  # expected gain = P(topic) + 2 P(question): gains 1 and 3 of the grades


def candidate_features(
    candidates: pd.DataFrame, reference: TextReference, embeddings: EmbeddingCache
) -> np.ndarray:
    """The scorer's input for `question_history` rows: history, text similarities, and
    the text's embedding (training and serving both call this)."""
    vectors = embeddings.embed(candidates["text"].tolist())
    similarities = reference.similarities(candidates, vectors)
    history = candidates[list(HISTORY_COLUMNS)].to_numpy(dtype=float)
    return np.hstack([history, similarities.to_numpy(), vectors])


@dataclass
class FittedRanker:
    """Both heads, and the Platt scaling that turns their scores into probabilities."""

    repeat_prior_weight: float
    topic_head: Pipeline
    repeat_head: Pipeline
    topic_calibration: LogisticRegression | None = None
    repeat_calibration: LogisticRegression | None = None

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(topic comes up) of its head, and P(question comes back): its head's blended
        with the structured estimate."""
        with one_thread():  # see `training.question_ranker.estimator.fit_heads`
            topic = self.topic_head.predict_proba(x)[:, 1]
            learned = self.repeat_head.predict_proba(x)[:, 1]
        prior = x[:, NAMED_COLUMNS.index("expected_repeat")]
        weight = self.repeat_prior_weight
        return topic, (1 - weight) * learned + weight * prior

    def probabilities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated P(question or its topic comes up), P(question comes back), and the
        ranking score (expected gain from the heads' own probabilities)."""
        topic, repeat = self.raw(x)
        calibrated_repeat = _calibrate(self.repeat_calibration, repeat)
        # The question coming back brings its topic with it.
        calibrated_topic = np.maximum(_calibrate(self.topic_calibration, topic), calibrated_repeat)
        return calibrated_topic, calibrated_repeat, expected_gain(topic, repeat)


@cache
def _thread_pools() -> Any:
    # Found once: looking the native thread pools up costs ~13 ms, too much per request.
    return ThreadpoolController()


def one_thread() -> Any:
    """A context in which OpenMP and BLAS run on one thread."""
    return _thread_pools().limit(limits=1)


def expected_gain(topic: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """E[2^grade - 1] from P(grade >= 1) and P(grade = 2)."""
    return topic + REPEAT_GAIN * repeat


def logit(probability: np.ndarray) -> np.ndarray:
    """The log-odds of probabilities (clipped off 0 and 1), as one column."""
    clipped = np.clip(probability, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped)).reshape(-1, 1)


def _calibrate(calibration: LogisticRegression | None, probability: np.ndarray) -> np.ndarray:
    if calibration is None:
        return probability
    return calibration.predict_proba(logit(probability))[:, 1]


class QuestionRankerPyfunc(PythonModel):
    """What serving loads: both heads and their calibration, the past questions a candidate
    is compared with (and the TF-IDF vocabulary fitted on them), and embeddings of every
    past question text. The MiniLM encoder itself is carried by reference (its package in
    the requirements) and loaded in `load_context`, for texts never seen in training.

    Texts are compared with the papers up to the newest one the input's candidates come
    from (found by `question_id`; the latest when none is known): a history cut at an
    earlier year is never compared with papers sat after it."""

    def __init__(
        self,
        ranker: FittedRanker,
        questions: pd.DataFrame,
        recent_years: int,
        embeddings: EmbeddingCache,
    ) -> None:
        self.ranker = ranker
        self.questions = questions[
            ["id", "subject_id", "topic_id", "candidate_key", "text", "exam_year"]
        ].reset_index(drop=True)
        self.recent_years = recent_years
        self.embeddings = embeddings
        self.encoder_name = ENCODER_NAME
        self.references: dict[int, TextReference] = {}
        self.reference_until(int(self.questions["exam_year"].max()))  # ready for serving

    def reference_until(self, year: int) -> TextReference:
        """The text reference of the papers up to `year` (fitted once)."""
        if year not in self.references:
            sat = self.questions[self.questions["exam_year"] <= year]
            self.references[year] = TextReference.fit(sat, self.recent_years, self.embeddings.embed)
        return self.references[year]

    def load_context(self, context: Any) -> None:
        self.embeddings.encoder  # noqa: B018  loaded now, not on the first request

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Per row: P(the question or its topic is in the next paper), P(the question
        itself is), the ranking score, and the rank within its subject (1 = first)."""
        years = self.questions["exam_year"].to_numpy()
        known = self.questions["id"].isin(model_input["question_id"]).to_numpy()
        newest = years[known].max() if known.any() else years.max()
        reference = self.reference_until(int(newest))
        x = candidate_features(model_input, reference, self.embeddings)
        topic, repeat, score = self.ranker.probabilities(x)
        rank = (
            pd.Series(score, index=model_input.index)
            .groupby(model_input["subject_id"].to_numpy())
            .rank(ascending=False, method="first")
        )
        return pd.DataFrame(
            {
                "probability": topic,
                "repeat_probability": repeat,
                "score": score,
                "rank": rank.astype("int64").to_numpy(),
            }
        )
