"""What serving loads of the topic recommender: its card, the logged pyfunc and everything
the pyfunc's `predict` and pickled state need (the collaborative factors and their
fold-in, the student's practice context, the two-stage scorer, the mastery rule and the
reasons). Nothing here imports training code: fitting lives in
`training.topic_recommender.estimator`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from scipy.sparse import csr_matrix
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import (  # type: ignore[import-untyped]
    ThreadpoolController,
    threadpool_limits,
)

from features.recommend import CANDIDATE_COLUMNS
from training.card import ModelCard

CARD = ModelCard(
    key="topic-recommender",
    name="prepiq-topic-recommender",
    main_metric="ndcg_10",
    higher_is_better=True,
)
KEYS = ["user_id", "topic_id"]
# mean_rating is left out: `topic_content` averages the ratings of the students in the
# frames, which online are the served student's alone, so it would differ from training.
SCORER_FEATURES = tuple(c for c in CANDIDATE_COLUMNS if c != "mean_rating")
CF_FEATURES = ("cf_score", "cf_percentile")
# Where a topic stands in the student's own practice, derived from the candidate rows of
# that student alone (`practice_context`), so serving derives them from its input as
# training does.
CONTEXT_FEATURES = (
    "subjects",
    "student_recent_answers",
    "subject_recent_answers",
    "recent_share",
    "answer_share",
    "level",
    "level_below_subject",
    "recent_vs_level",
    "new_topic",
    "new_topics_in_subject",
    "weakness_rank",
    "weak_focus",
    "recent_rank",
    "after_quizzed",
    "after_recent_quizzed",
    "after_busiest",
    "pace",
)
OWN_FEATURES = (*SCORER_FEATURES, *CONTEXT_FEATURES)  # the hybrid without its CF part
HYBRID_FEATURES = (*OWN_FEATURES, *CF_FEATURES)
# A quiz's worth of answers on a topic: mock papers spread one or two answers over many
# topics, so the furthest topic with this many answers is where the student's own
# practice (not a mock paper) has reached in the syllabus.
QUIZZED_ANSWERS = 5
INPUT_COLUMNS = ["user_id", "topic_id", "subject_id", "preferred_difficulty", *CANDIDATE_COLUMNS]
OUTPUT_COLUMNS = ["user_id", "topic_id", "rank", "confidence", "reason"]
WEAK_REASON_ACCURACY = 0.6  # below this a practised topic is explained as a weak area
SIMILAR_REASON_PERCENTILE = 0.8  # top fifth of a student's topics by the collaborative score


# -- the collaborative part --------------------------------------------------------------


def practice_signal(rows: pd.DataFrame, gain_weight: float) -> np.ndarray:
    """Implicit feedback per (student, topic): how much the student practised it, weighted
    up where their results on it improved (0 for a topic never practised)."""
    improved = 1.0 + gain_weight * rows["accuracy_gain"].clip(lower=0.0).to_numpy()
    return np.log1p(rows["attempts"].to_numpy()) * improved


@dataclass
class CollaborativeFilter:
    """ALS topic factors and what a student's fold-in needs (implicit's confidence is
    `alpha * signal`, as in its `recalculate_user`)."""

    topics: np.ndarray  # sorted topic ids, the rows of item_factors
    item_factors: np.ndarray
    regularization: float
    alpha: float
    gain_weight: float

    @classmethod
    def fit(
        cls, rows: pd.DataFrame, topics: np.ndarray, hp: dict[str, Any], seed: int
    ) -> CollaborativeFilter:
        """Fit ALS on the candidate rows of some students (their practice so far)."""
        # implicit only fits: serving folds a student in with numpy and never loads it
        from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415

        practised = rows[rows["attempts"] > 0]
        users, user_pos = np.unique(practised["user_id"].to_numpy(), return_inverse=True)
        matrix = csr_matrix(
            (
                practice_signal(practised, hp["als_gain_weight"]).astype(np.float32),
                (user_pos, np.searchsorted(topics, practised["topic_id"].to_numpy())),
            ),
            shape=(len(users), len(topics)),
        )
        # One thread, BLAS included (implicit's advice): the 2 cores are shared and the
        # matrix is small.
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=int(hp["als_factors"]),
                regularization=float(hp["als_regularization"]),
                alpha=float(hp["als_alpha"]),
                iterations=int(hp["als_iterations"]),
                num_threads=1,
                random_state=seed,
            )
            als.fit(matrix, show_progress=False)
        return cls(
            topics=topics,
            item_factors=np.asarray(als.item_factors, dtype=np.float64),
            regularization=float(hp["als_regularization"]),
            alpha=float(hp["als_alpha"]),
            gain_weight=float(hp["als_gain_weight"]),
        )

    def user_factors(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each student's factors from their practice in `rows` by the implicit-ALS least
        squares solve: (Y'Y + reg I + Y'(C_u - I)Y) x_u = Y'C_u p_u. Returns the position
        of each row's student and the factors, one row per student."""
        users, user_pos = np.unique(rows["user_id"].to_numpy(), return_inverse=True)
        item_pos, known = self._positions(rows)
        confidence = np.zeros((len(users), len(self.topics)))
        signal = self.alpha * practice_signal(rows, self.gain_weight)
        confidence[user_pos[known], item_pos[known]] = signal[known]
        y = self.item_factors
        extra = np.where(confidence > 0, confidence - 1.0, 0.0)
        a = y.T @ y + self.regularization * np.eye(y.shape[1])
        a = a[None] + (y.T[None] * extra[:, None, :]) @ y
        b = confidence @ y
        return user_pos, np.linalg.solve(a, b[..., None])[..., 0]

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """The ALS preference of each row's student for its topic (0 for a topic unknown
        to the fitted catalogue)."""
        user_pos, factors = self.user_factors(rows)
        item_pos, known = self._positions(rows)
        return np.where(
            known, (factors[user_pos] * self.item_factors[np.where(known, item_pos, 0)]).sum(1), 0
        )

    def _positions(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        topic = rows["topic_id"].to_numpy()
        pos = np.clip(np.searchsorted(self.topics, topic), 0, len(self.topics) - 1)
        return pos, self.topics[pos] == topic


def with_cf(rows: pd.DataFrame, cf: CollaborativeFilter) -> pd.DataFrame:
    """The rows with the collaborative score and its percentile among the student's topics."""
    out = rows.copy()
    out["cf_score"] = cf.score(rows)
    out["cf_percentile"] = out.groupby("user_id")["cf_score"].rank(pct=True)
    return out


# -- the student's own practice context --------------------------------------------------


def practice_context(rows: pd.DataFrame, prior_answers: float) -> pd.DataFrame:
    """`CONTEXT_FEATURES` of candidate rows, per student (and origin, when the rows have
    one): how the student's recent answers spread over subjects and topics, the topic's
    level against the subject's (the level the label's improvement is measured from),
    how the student's recent practice favours weak topics, and the topic's syllabus
    position after the furthest topic quizzed (overall, recently, and the busiest one) with
    the pace of new topics: what the student will practise next, and where they improve.
    Group sums and maxima are numpy (`bincount`), not pandas transforms: serving derives
    these for every request."""
    if "origin" in rows:
        student = rows.groupby(["user_id", "origin"], sort=False).ngroup().to_numpy()
    else:  # serving: the numbering ngroup(sort=False) gives, without its groupby
        student = pd.factorize(rows["user_id"])[0]
    # (student, subject) groups by first appearance, as ngroup(sort=False) numbers them.
    subject_id = rows["subject_id"].to_numpy(dtype=np.int64)
    if len(rows):
        subject_id = subject_id - subject_id.min()
    span = int(subject_id.max()) + 1 if len(rows) else 1
    subject = pd.factorize(student.astype(np.int64) * span + subject_id)[0]
    # Each subject group's student, to count a student's subjects.
    subject_student = np.zeros(subject.max() + 1 if len(rows) else 0, dtype=int)
    subject_student[subject] = student

    def total(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return np.bincount(groups, weights=values)[groups]

    def furthest(values: np.ndarray) -> np.ndarray:
        top = np.full(subject.max() + 1 if len(rows) else 0, -np.inf)
        np.maximum.at(top, subject, values)
        return np.where(np.isfinite(top), top, np.nan)[subject]

    recent = rows["attempts_last_30d"].to_numpy(dtype=float)
    attempts = rows["attempts"].to_numpy(dtype=float)
    practised = rows["practised"].to_numpy() > 0
    position = rows["position"].to_numpy(dtype=float)
    subject_level = rows["subject_accuracy"].fillna(0.5).to_numpy(dtype=float)
    accuracy = rows["accuracy"].to_numpy(dtype=float)
    level = (np.nan_to_num(accuracy) * attempts + prior_answers * subject_level) / (
        attempts + prior_answers
    )
    student_recent = total(recent, student)
    subject_recent = total(recent, subject)
    subject_attempts = rows["subject_attempts"].to_numpy(dtype=float)
    new_topic = (practised & (attempts == recent)).astype(float)
    weak_recent = recent * (practised & (level < subject_level))
    busiest = (recent == furthest(recent)) & (recent > 0)
    quizzed_new = ((attempts >= QUIZZED_ANSWERS) & (attempts == recent)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "subjects": np.bincount(subject_student)[student],
            "student_recent_answers": student_recent,
            "subject_recent_answers": subject_recent,
            "recent_share": np.where(subject_recent > 0, recent / subject_recent, 0.0),
            "answer_share": np.where(subject_attempts > 0, attempts / subject_attempts, 0.0),
            "level": level,
            "level_below_subject": subject_level - level,
            "recent_vs_level": rows["accuracy_last_30d"].to_numpy(dtype=float) - level,
            "new_topic": new_topic,
            "new_topics_in_subject": total(new_topic, subject),
            "weakness_rank": pd.Series(np.where(practised, level, np.nan))
            .groupby(subject)
            .rank(pct=True)
            .to_numpy(),
            "weak_focus": np.where(
                student_recent > 0, total(weak_recent, student) / student_recent, np.nan
            ),
            "recent_rank": pd.Series(recent)
            .groupby(subject)
            .rank(ascending=False, method="min")
            .to_numpy(),
            "after_quizzed": position
            - furthest(np.where(attempts >= QUIZZED_ANSWERS, position, -np.inf)),
            "after_recent_quizzed": position
            - furthest(np.where(recent >= QUIZZED_ANSWERS, position, -np.inf)),
            "after_busiest": position - furthest(np.where(busiest, position, -np.inf)),
            "pace": total(quizzed_new, subject),
        }
    return pd.DataFrame(out, index=rows.index).astype(float)


def with_context(rows: pd.DataFrame, prior_answers: float) -> pd.DataFrame:
    """The rows with their `CONTEXT_FEATURES`."""
    return pd.concat([rows, practice_context(rows, prior_answers)], axis=1)


# -- the scorer, the mastery rule and the hybrid ------------------------------------------


@dataclass(frozen=True)
class MasteryRule:
    """A topic is mastered (never recommended) after many attempts with near-perfect
    accuracy both overall and over the last 30 days."""

    min_attempts: int
    accuracy: float

    def applies(self, rows: pd.DataFrame) -> np.ndarray:
        recent = rows["accuracy_last_30d"].fillna(rows["accuracy"])
        return (
            (rows["attempts"] >= self.min_attempts)
            & (rows["accuracy"] >= self.accuracy)
            & (recent >= self.accuracy)
        ).to_numpy()


def feature_matrix(rows: pd.DataFrame, columns: tuple[str, ...] = HYBRID_FEATURES) -> np.ndarray:
    """The scorer's input matrix (NaN where a feature does not apply; the trees route it)."""
    return rows[list(columns)].to_numpy(dtype=np.float64)


@dataclass
class TwoStageScorer:
    """P(relevant) as P(practised in the window) x P(improved there | practised): two
    boosted classifiers with the trial's hyperparameters, the second fitted on practised
    rows only. Whether a student takes a topic up next (syllabus pace, quiz habits) and
    whether their results then rise (the level they start from) are different questions;
    one classifier of their conjunction learns mostly the first. Fitted by
    `training.topic_recommender.estimator.fit_scorer`."""

    practice: HistGradientBoostingClassifier
    improvement: HistGradientBoostingClassifier
    columns: tuple[str, ...]

    def probability(self, rows: pd.DataFrame) -> np.ndarray:
        """P(relevant) of each row."""
        x = feature_matrix(rows, self.columns)
        return self.practice.predict_proba(x)[:, 1] * self.improvement.predict_proba(x)[:, 1]


@cache
def openmp_controller() -> ThreadpoolController:
    """The process's thread pools, inspected once (a new inspection per call costs ms)."""
    return ThreadpoolController()


@dataclass
class HybridRecommender:
    """What ranks one student's candidates: the collaborative factors, the scorer, the
    confidence calibration and the mastery rule."""

    collaborative: CollaborativeFilter
    scorer: TwoStageScorer
    calibrator: IsotonicRegression
    mastery: MasteryRule
    prior_answers: float  # of the context's topic level (the label's earlier level)

    def score(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """Ranking score (the scorer's probability), calibrated confidence, and the rows
        with their collaborative columns."""
        enriched = with_context(with_cf(rows, self.collaborative), self.prior_answers)
        # One OpenMP thread: for a few dozen rows, two threads on busy cores cost ~100x.
        with openmp_controller().limit(limits=1, user_api="openmp"):
            raw = self.scorer.probability(enriched)
        return raw, self.calibrator.predict(raw), enriched

    def rank(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Each student's topics best first, mastered ones left out, with a reason."""
        rows = rows.reset_index(drop=True)
        raw, confidence, enriched = self.score(rows)
        out = enriched.assign(score=raw, confidence=confidence, reason=reasons(enriched))
        out = out[~self.mastery.applies(rows)]
        out = out.sort_values(["user_id", "score"], ascending=[True, False], kind="stable")
        out["rank"] = out.groupby("user_id").cumcount() + 1
        return out[OUTPUT_COLUMNS].reset_index(drop=True)


def reasons(rows: pd.DataFrame) -> np.ndarray:
    """A short reason per recommended topic, the first that applies: a weak area, what
    similar students improved on, the student's own interest, the next topic of the
    syllabus, else how often exams ask it."""
    accuracy = rows["accuracy"].to_numpy()
    weak = (rows["practised"] > 0).to_numpy() & (
        np.nan_to_num(accuracy, nan=1.0) < WEAK_REASON_ACCURACY
    )
    next_up = (rows["practised"] == 0).to_numpy() & (rows["positions_ahead"].fillna(1) > 0)
    return np.select(
        [
            weak,
            (rows["cf_percentile"] >= SIMILAR_REASON_PERCENTILE).to_numpy(),
            (rows["interested"] > 0).to_numpy(),
            next_up,
        ],
        [
            [f"weak area: accuracy {a:.0%}" for a in np.nan_to_num(accuracy)],
            "students like you improved here",
            "you marked it as interesting",
            "next in your syllabus",
        ],
        default=[f"asked in {f:.0%} of past papers" for f in rows["paper_frequency"]],
    )


# -- serving ----------------------------------------------------------------------------


class TopicRecommenderPyfunc(PythonModel):
    """What serving loads: rows of `features.recommend.candidate_topics` for one student
    (or several) in, that student's topics ranked out (user_id, topic_id, rank, confidence,
    reason), mastered topics left out. A student unseen at training is folded into the
    collaborative factors from the practice columns of these same rows."""

    def __init__(self, recommender: HybridRecommender) -> None:
        self.recommender = recommender

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.recommender.rank(model_input)
