"""Topic recommender: which of a student's enrolled topics to work on next, ranked, with a
confidence per topic.

A hybrid of collaborative filtering and content-based scoring:
- collaborative: implicit-feedback ALS (the `implicit` library) over what students
  practised, weighted up where their results improved. Its item (topic) factors are fitted
  on the training students; a student's own factors are always folded in from their
  practice by least squares (the solve of implicit's `recalculate_user`), so a student
  unseen at training is scored exactly like one seen;
- content and context: the columns of `features.recommend.candidate_topics` (weak areas,
  interests, preferred difficulty, syllabus weight and position, past-paper frequency),
  and the student's own practice context derived from those rows (`practice_context`:
  where their quizzing has reached in each syllabus, their pace, recent focus);
- a two-stage gradient-boosted scorer over all of them (P(practised in the window) x
  P(improved | practised), `TwoStageScorer`), whose probability, calibrated by isotonic
  regression on out-of-fold predictions of the training students, is the confidence.

Label, from the source only: a topic is relevant for a student at origin t when the student
practises it in the following window (at least `min_window_answers` answers) AND their
accuracy over the window beats their earlier level on it by `min_improvement` (the earlier
level: their accuracy on the topic before t, shrunk toward their accuracy in the subject).
The generator's expected score gains are a second yardstick, never an input.
Mastered topics (many attempts, near-perfect overall and recent accuracy) are never
recommended. Baselines: popularity, weakest-topics-first, and a content-only scorer (topic
content and stated preferences); the report adds the hybrid's scorer without its
collaborative part as an ablation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

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

from core.config import params_section
from core.exceptions import SourceDataError
from features.focus import answer_table
from features.frames import SourceFrames, from_snapshot
from features.recommend import CANDIDATE_COLUMNS, candidate_topics
from training.metrics import binary_classification, ranking_metrics
from training.model_spec import Outcome, TrainingContext
from training.slices import student_topic_slices, with_slice_columns
from training.splits import group_folds, window_split

NAME = "prepiq-topic-recommender"
LABEL = "relevant"
REQUIREMENTS = ["mlflow", "scikit-learn", "scipy", "pandas", "numpy", "cloudpickle"]
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
# The content-only baseline: what the topic is and what the student said they want, no
# practice history and no collaborative signal.
PROFILE_FEATURES = (
    "interested",
    "syllabus_weight",
    "position",
    "mean_difficulty",
    "difficulty_gap",
    "paper_frequency",
)
OUTPUT_COLUMNS = ["user_id", "topic_id", "rank", "confidence", "reason"]
WEAK_REASON_ACCURACY = 0.6  # below this a practised topic is explained as a weak area
SIMILAR_REASON_PERCENTILE = 0.8  # top fifth of a student's topics by the collaborative score


@dataclass(frozen=True)
class TopicRecommenderParams:
    """The knobs of `params.yaml: topic_recommender`."""

    label_window_days: int = 30
    min_window_answers: int = 5
    min_improvement: float = 0.05
    prior_answers: float = 4.0
    origin_step_days: int = 14
    first_origin_days: int = 30
    holdout_fraction: float = 0.2
    cv_folds: int = 3
    trials: int = 6
    top_k: int = 10
    truth_top_k: int = 5
    mastery_min_attempts: int = 15
    mastery_accuracy: float = 0.9
    search_space: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TopicRecommenderParams:
        known = params_section(params, "topic_recommender", cls.__dataclass_fields__, DEFAULT_SPACE)
        return cls(**known)


# -- dataset: candidates, labels, splits ------------------------------------------------


def earlier_level(rows: pd.DataFrame, p: TopicRecommenderParams) -> pd.Series:
    """A student's level on a topic before the origin: their accuracy on it, shrunk toward
    their accuracy in the subject (0.5 with no answers in it), so a topic practised twice
    or never has a level to improve on."""
    base = rows["subject_accuracy"].fillna(0.5)
    right = rows["accuracy"].fillna(0.0) * rows["attempts"]
    return (right + p.prior_answers * base) / (rows["attempts"] + p.prior_answers)


def labelled_candidates(
    frames: SourceFrames, answers: pd.DataFrame, origin: datetime, p: TopicRecommenderParams
) -> pd.DataFrame:
    """Candidate topics at `origin` (features up to it) with the label from the window after
    it. `answers` is `answer_table(frames)`."""
    rows = candidate_topics(frames, origin)
    later = answers[
        (answers["answered_at"] > pd.Timestamp(origin))
        & (answers["answered_at"] <= pd.Timestamp(origin + timedelta(days=p.label_window_days)))
    ]
    outcome = later.groupby(KEYS)["correct"].agg(window_accuracy="mean", window_answers="size")
    rows = rows.merge(outcome.reset_index(), on=KEYS, how="left")
    rows["window_answers"] = rows["window_answers"].fillna(0)
    rows["earlier_level"] = earlier_level(rows, p)
    practised, improved = label_parts(rows, p)
    rows[LABEL] = (practised & improved).astype(int)
    rows["origin"] = pd.Timestamp(origin)
    return rows


def label_parts(rows: pd.DataFrame, p: TopicRecommenderParams) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of the label of labelled candidate rows: practised in the window
    (enough answers), and improved there on the earlier level (NaN accuracy: False)."""
    practised = (rows["window_answers"] >= p.min_window_answers).to_numpy()
    gain = (rows["window_accuracy"] - rows["earlier_level"]).to_numpy(dtype=float)
    return practised, np.nan_to_num(gain, nan=-np.inf) >= p.min_improvement


@dataclass
class RecommenderData:
    """Training examples (training students, earlier origins), the hold-out (other
    students at the latest origin whose window has closed) and `reference`: the training
    students' candidates at the hold-out origin, which the collaborative part and the
    popularity baseline learn from when the hold-out is scored."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    reference: pd.DataFrame
    holdout_origin: datetime
    topics: np.ndarray


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: TopicRecommenderParams, seed: int
) -> RecommenderData:
    """Split by student and by time: hold-out students are scored at the last origin whose
    window has closed; training students at origins whose windows closed before it."""
    split = window_split(frames, as_of, p, seed)
    training_frames, holdout_frames = split.training, split.holdout
    train_origins, holdout_origin = split.train_origins, split.holdout_origin
    training_answers = answer_table(training_frames)
    train = pd.concat(
        [labelled_candidates(training_frames, training_answers, t, p) for t in train_origins],
        ignore_index=True,
    )
    holdout_answers = answer_table(holdout_frames)
    holdout = labelled_candidates(holdout_frames, holdout_answers, holdout_origin, p)
    holdout = with_slice_columns(holdout, holdout_frames, holdout_answers, holdout_origin)
    return RecommenderData(
        train=train,
        holdout=holdout,
        reference=candidate_topics(training_frames, holdout_origin),
        holdout_origin=holdout_origin,
        topics=np.sort(frames["topics"]["id"].to_numpy()),
    )


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
        from implicit.cpu.als import AlternatingLeastSquares

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


def cf_by_origin(
    rows: pd.DataFrame,
    fit_users: np.ndarray,
    topics: np.ndarray,
    hp: dict[str, Any],
    seed: int,
) -> pd.DataFrame:
    """`with_cf` at every origin, the factors fitted on `fit_users`' practice at that origin
    only (never on later practice, never on the students being scored)."""
    parts = []
    for _, at in rows.groupby("origin", sort=True):
        cf = CollaborativeFilter.fit(at[at["user_id"].isin(fit_users)], topics, hp, seed)
        parts.append(with_cf(at, cf))
    return pd.concat(parts).loc[rows.index]


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


def make_scorer(hp: dict[str, Any], seed: int) -> HistGradientBoostingClassifier:
    """The gradient-boosted scorer with a trial's hyperparameters."""
    return HistGradientBoostingClassifier(
        max_iter=int(hp["gb_iterations"]),
        learning_rate=float(hp["gb_learning_rate"]),
        max_leaf_nodes=int(hp["gb_leaf_nodes"]),
        l2_regularization=float(hp["gb_l2"]),
        min_samples_leaf=int(hp["gb_min_leaf"]),
        early_stopping=False,  # a fixed budget, tuned: no random row split inside the fit
        random_state=seed,
    )


@dataclass
class TwoStageScorer:
    """P(relevant) as P(practised in the window) x P(improved there | practised): two
    boosted classifiers with the trial's hyperparameters, the second fitted on practised
    rows only. Whether a student takes a topic up next (syllabus pace, quiz habits) and
    whether their results then rise (the level they start from) are different questions;
    one classifier of their conjunction learns mostly the first."""

    practice: HistGradientBoostingClassifier
    improvement: HistGradientBoostingClassifier
    columns: tuple[str, ...]

    @classmethod
    def fit(
        cls,
        rows: pd.DataFrame,
        p: TopicRecommenderParams,
        hp: dict[str, Any],
        seed: int,
        columns: tuple[str, ...] = HYBRID_FEATURES,
    ) -> TwoStageScorer:
        """Fit both stages on labelled candidate rows with their context (and CF) columns."""
        x = feature_matrix(rows, columns)
        practised, improved = label_parts(rows, p)
        if len(np.unique(practised)) < 2 or len(np.unique(improved[practised])) < 2:
            raise SourceDataError(
                f"topic recommender: the training rows need topics practised and not, and "
                f"practised topics improved and not ({int(practised.sum())} of {len(rows)} "
                f"practised with params.yaml topic_recommender.min_window_answers="
                f"{p.min_window_answers}); more history or students are needed"
            )
        return cls(
            practice=make_scorer(hp, seed).fit(x, practised.astype(int)),
            improvement=make_scorer(hp, seed).fit(x[practised], improved[practised].astype(int)),
            columns=columns,
        )

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


# -- tuning -----------------------------------------------------------------------------

DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "als_factors": (4, 32),
    "als_regularization": (0.01, 10.0),
    "als_iterations": (5, 20),
    "als_alpha": (1.0, 40.0),
    "als_gain_weight": (0.0, 4.0),
    "gb_iterations": (50, 150),
    "gb_learning_rate": (0.02, 0.3),
    "gb_leaf_nodes": (8, 48),
    "gb_l2": (1e-4, 1.0),
    "gb_min_leaf": (20, 400),
}
LOG_SCALE = {"als_regularization", "als_alpha", "gb_learning_rate", "gb_leaf_nodes", "gb_l2"}
INTEGERS = {"als_factors", "als_iterations", "gb_iterations", "gb_leaf_nodes", "gb_min_leaf"}


def suggest(trial: Any, p: TopicRecommenderParams) -> dict[str, Any]:
    """An Optuna trial's hyperparameters (ranges from `params.yaml:
    topic_recommender.search_space`)."""
    space = DEFAULT_SPACE | {k: (v[0], v[1]) for k, v in p.search_space.items()}
    chosen: dict[str, Any] = {}
    for name, (low, high) in space.items():
        if name in INTEGERS:
            chosen[name] = int(trial.suggest_int(name, int(low), int(high), log=name in LOG_SCALE))
        else:
            chosen[name] = float(
                trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE)
            )
    return chosen


def out_of_fold(
    train: pd.DataFrame,
    topics: np.ndarray,
    hp: dict[str, Any],
    p: TopicRecommenderParams,
    seed: int,
    report: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """Out-of-fold scorer probabilities, folds grouped by student: in each fold the ALS
    factors and the scorer see the other folds' students only. `report(step, ndcg)` may
    raise to prune a hopeless trial after any fold."""
    users = train["user_id"].to_numpy()
    probability = np.full(len(train), np.nan)
    context = with_context(train, p.prior_answers)  # per student: the same in every fold
    for step, (fit_rows, score_rows) in enumerate(group_folds(users, p.cv_folds, seed)):
        enriched = cf_by_origin(context, np.unique(users[fit_rows]), topics, hp, seed)
        scorer = TwoStageScorer.fit(enriched.iloc[fit_rows], p, hp, seed)
        probability[score_rows] = scorer.probability(enriched.iloc[score_rows])
        if report is not None:
            done = ~np.isnan(probability)
            report(step, rank_quality(train[done], probability[done], p)[f"ndcg_{p.top_k}"])
    return probability


def rank_quality(
    rows: pd.DataFrame,
    score: np.ndarray,
    p: TopicRecommenderParams,
    relevance: np.ndarray | None = None,
) -> dict[str, float]:
    """NDCG@5, NDCG@k and recall@k per (student, origin), mastered topics left out of
    the ranking; relevance defaults to the label."""
    groups = (rows["user_id"] + "@" + rows["origin"].astype(str)).to_numpy()
    rule = MasteryRule(p.mastery_min_attempts, p.mastery_accuracy)
    shown = np.where(rule.applies(rows), -np.inf, score)
    relevant = rows[LABEL].to_numpy() if relevance is None else relevance
    metrics = ranking_metrics(groups, shown, relevant, p.top_k)
    five = ranking_metrics(groups, shown, relevant, 5)
    # NDCG@10 always: it is the main metric the promotion gate compares, whatever top_k.
    ten = metrics if p.top_k == 10 else ranking_metrics(groups, shown, relevant, 10)
    return {"ndcg_5": five["ndcg_5"], "ndcg_10": ten["ndcg_10"], **metrics}


def fit_recommender(
    data: RecommenderData, hp: dict[str, Any], p: TopicRecommenderParams, seed: int
) -> HybridRecommender:
    """Refit on every training student: the scorer on all training origins, the confidence
    calibrated on its out-of-fold probabilities, and the served collaborative factors from
    the training students' practice at the hold-out origin (the latest that leaves the
    hold-out window unseen, so what is logged is what is evaluated)."""
    train, y = data.train, data.train[LABEL].to_numpy()
    calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        out_of_fold(train, data.topics, hp, p, seed), y
    )
    context = with_context(train, p.prior_answers)
    enriched = cf_by_origin(context, train["user_id"].unique(), data.topics, hp, seed)
    return HybridRecommender(
        collaborative=CollaborativeFilter.fit(data.reference, data.topics, hp, seed),
        scorer=TwoStageScorer.fit(enriched, p, hp, seed),
        calibrator=calibrator,
        mastery=MasteryRule(p.mastery_min_attempts, p.mastery_accuracy),
        prior_answers=p.prior_answers,
    )


# -- evaluation -------------------------------------------------------------------------


def popularity_score(reference: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Baseline: how much the training students practised each topic over the last 30
    days before the origin."""
    popularity = reference.groupby("topic_id")["attempts_last_30d"].sum()
    return rows["topic_id"].map(popularity).fillna(0.0).to_numpy(dtype=float)


def weakest_first_score(rows: pd.DataFrame) -> np.ndarray:
    """Baseline: lowest accuracy so far first; topics never practised after every practised
    one, in syllabus order."""
    accuracy = rows["accuracy"].to_numpy()
    return np.where(np.isnan(accuracy), -2.0 - 0.01 * rows["position"].to_numpy(), -accuracy)


def truth_relevance(truth_dir: Path, origin: datetime, top: int) -> pd.DataFrame | None:
    """The generator's expected score gain of each student's `top` topics at the mastery
    snapshot nearest `origin` (other topics 0); None without ground truth."""
    path = truth_dir / "mastery.parquet"
    if not path.exists():
        return None
    mastery = pd.read_parquet(path, columns=["user_id", "topic_id", "as_of", "expected_score_gain"])
    dates = pd.to_datetime(mastery["as_of"])
    distance = (dates - pd.Timestamp(origin.date())).abs()
    snapshot = mastery[dates == dates[distance == distance.min()].iloc[0]].copy()
    order = snapshot.groupby("user_id")["expected_score_gain"].rank(ascending=False, method="first")
    snapshot["truth_gain"] = snapshot["expected_score_gain"].where(order <= top, 0.0)
    return snapshot[["user_id", "topic_id", "truth_gain"]]


# The content-only baseline's scorer: fixed, so a registered version is compared with the
# same baseline whenever it is evaluated.
BASELINE_SCORER = {
    "gb_iterations": 100,
    "gb_learning_rate": 0.1,
    "gb_leaf_nodes": 16,
    "gb_l2": 0.01,
    "gb_min_leaf": 100,
}
INPUT_COLUMNS = ["user_id", "topic_id", "subject_id", "preferred_difficulty", *CANDIDATE_COLUMNS]


def model_scores(
    predict: Callable[[pd.DataFrame], pd.DataFrame], rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """A model's ranking score (minus its rank; -inf for a topic it does not recommend) and
    confidence (NaN there) for each candidate row, through its `predict`."""
    served = predict(rows[INPUT_COLUMNS])
    placed = rows[KEYS].merge(served[[*KEYS, "rank", "confidence"]], on=KEYS, how="left")
    return (
        -placed["rank"].fillna(np.inf).to_numpy(dtype=float),
        placed["confidence"].to_numpy(dtype=float),
    )


def method_metrics(
    rows: pd.DataFrame,
    score: np.ndarray,
    probability: np.ndarray | None,
    p: TopicRecommenderParams,
    topics: int,
) -> dict[str, float]:
    """Ranking quality, catalogue coverage and (for a method with probabilities)
    calibration on the topics it recommends; mastered topics are never recommended."""
    shown = np.isfinite(score) & ~MasteryRule(p.mastery_min_attempts, p.mastery_accuracy).applies(
        rows
    )
    metrics = rank_quality(rows, score, p)
    metrics["coverage"] = coverage(rows, score, shown, p.top_k) / topics
    if probability is not None:
        calibration = binary_classification(rows[LABEL].to_numpy()[shown], probability[shown])
        metrics |= {"brier": calibration["brier"], "ece": calibration["ece"]}
    return metrics


def evaluate(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    data: RecommenderData,
    p: TopicRecommenderParams,
    seed: int,
    truth: pd.DataFrame | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Hold-out metrics of a model (its `predict` on `candidate_topics` rows, as logged)
    next to the baselines on the same students and origin, and (with ground truth) against
    the generator's best topics. Returns the report and the confidence of each method that
    gives one (NaN where it recommends nothing), for the calibration plot."""
    holdout = data.holdout
    ranking, confidence = model_scores(predict, holdout)
    y = holdout[LABEL].to_numpy()
    with threadpool_limits(1):  # see `TopicRecommenderSpec.finish`
        content = make_scorer(BASELINE_SCORER, seed).fit(
            feature_matrix(data.train, PROFILE_FEATURES), data.train[LABEL].to_numpy()
        )
    probabilities = {
        "model": confidence,
        "baseline_content_only": content.predict_proba(feature_matrix(holdout, PROFILE_FEATURES))[
            :, 1
        ],
    }
    scores = {
        "model": ranking,
        "baseline_popularity": popularity_score(data.reference, holdout),
        "baseline_weakest_first": weakest_first_score(holdout),
        "baseline_content_only": probabilities["baseline_content_only"],
    }
    report: dict[str, Any] = {
        name: method_metrics(holdout, score, probabilities.get(name), p, len(data.topics))
        for name, score in scores.items()
    }
    if truth is not None:
        on_truth = holdout.merge(truth, on=KEYS, how="left")
        gain = on_truth["truth_gain"].fillna(0.0).to_numpy()
        report["against_truth"] = {
            name: rank_quality(holdout, score, p, relevance=gain) for name, score in scores.items()
        }
    report["positive_rate"] = float(y.mean())
    return report, probabilities


def report_markdown(
    report: dict[str, Any], data: RecommenderData, p: TopicRecommenderParams
) -> str:
    """The report's Markdown tables: every method on the source labels, then against the
    generator's truth when it was at hand."""
    from training import reports

    columns = ["ndcg_5", f"ndcg_{p.top_k}", f"recall_{p.top_k}", "coverage", "brier", "ece"]
    markdown = reports.markdown_table(
        f"{NAME}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d}; "
        f"relevant = practised and improved in the next {p.label_window_days} days)",
        {k: v for k, v in report.items() if isinstance(v, dict) and "coverage" in v},
        columns,
    )
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            f"against the generator's top {p.truth_top_k} topics by expected score gain",
            report["against_truth"],
            columns[:3],
        )
    return markdown


def coverage(rows: pd.DataFrame, score: np.ndarray, served: np.ndarray, k: int) -> float:
    """How many distinct topics appear in anyone's top k (mastered topics left out)."""
    ranked = rows.loc[served, ["user_id", "topic_id"]].assign(score=score[served])
    top = ranked.sort_values("score", ascending=False, kind="stable").groupby("user_id").head(k)
    return float(top["topic_id"].nunique())


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


# -- the spec ---------------------------------------------------------------------------


class TopicRecommenderSpec:
    """The topic recommender for the training run (`training.model_spec.ModelSpec`)."""

    name = NAME
    key = "topic-recommender"
    direction: Literal["minimize", "maximize"] = "maximize"
    main_metric = "ndcg_10"
    higher_is_better = True

    def default_trials(self, ctx: TrainingContext) -> int:
        return TopicRecommenderParams.from_params(ctx.params).trials

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> RecommenderData:
        return make_dataset(
            frames, ctx.as_of, TopicRecommenderParams.from_params(ctx.params), ctx.seed
        )

    def objective(self, ctx: TrainingContext, data: RecommenderData) -> Callable[[Any], float]:
        """NDCG@k, out of fold over the training students (every training origin)."""
        from training.tuning import pruning_reporter

        p = TopicRecommenderParams.from_params(ctx.params)

        def score(trial: Any) -> float:
            hp = suggest(trial, p)
            with threadpool_limits(1):  # see `finish`
                oof = out_of_fold(data.train, data.topics, hp, p, ctx.seed, pruning_reporter(trial))
            return rank_quality(data.train, oof, p)[f"ndcg_{p.top_k}"]

        return score

    def evaluate(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """A model's hold-out report next to the baselines, and its Markdown tables."""
        p = TopicRecommenderParams.from_params(ctx.params)
        truth = (
            truth_relevance(ctx.truth_dir, data.holdout_origin, p.truth_top_k)
            if ctx.truth_dir
            else None
        )
        report, _ = evaluate(predict, data, p, ctx.seed, truth)
        return report, report_markdown(report, data, p)

    def registered_sections(self, report: dict[str, Any]) -> dict[str, str]:
        """The sections of a training run's report that score the registered version as
        `evaluate` does (`prepiq reproduce`): all but the ablation (another scorer, fitted
        without the collaborative part) and the cross-validation score."""
        return {k: k for k in report if k not in ("ablation_without_cf", "cv_ndcg")}

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """Hold-out ranking quality per slice the promotion gate compares: the candidate
        topic's subject, new vs long-standing students (joined under
        `promotion.new_student_days` before the origin), low vs high recent activity
        (answers over the 30 days up to the origin below / at least the hold-out students'
        median).

        A slice is a subset of the candidate rows, and its NDCG is computed as the report's
        (`rank_quality`) over each student's candidates within the slice, in the order the
        model ranked them all once (mastered topics left out). For the student slices that
        is the same as grouping students: each keeps their whole ranking. For a subject it
        is the model's ordering of that subject's topics, relevance from that subject's
        topics only; the alternative (the whole list, counting only that subject's relevant
        topics) would mostly measure how the subject competes with the student's other
        subjects. `n` is the number of students averaged (those with a relevant topic in
        the slice), not rows, so `promotion.min_slice_size` counts students; `candidates`
        gives the rows."""
        p = TopicRecommenderParams.from_params(ctx.params)
        holdout = data.holdout
        ranking, _ = model_scores(predict, holdout)
        masks = student_topic_slices(holdout, ctx.params, NAME, self.key)
        reports: dict[str, dict[str, float]] = {}
        for name, rows in masks.items():
            if rows.any():
                metrics = rank_quality(holdout[rows], ranking[rows], p)
                reports[name] = metrics | {"n": metrics["groups"], "candidates": float(rows.sum())}
        return reports

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue, on 5 hold-out students who have
        practised (the first by id): the model's own first choice among topics with
        questions sat by the origin, given many recent answers all right (every earlier
        answer on it made right, plus `mastery_min_attempts` + 5 answers over the days
        before the origin), never enters the top k; the same topic with those answers all
        wrong still does (so a model that just drops the topic, or recommends nothing, does
        not pass). Candidates are rebuilt at the hold-out origin from the edited
        `test_answers` by `features.recommend.candidate_topics` (the builder serving uses),
        not by editing candidate rows."""
        from features.recommend import TABLES as RECOMMEND_TABLES

        p = TopicRecommenderParams.from_params(ctx.params)
        origin = data.holdout_origin
        practised = data.holdout.loc[data.holdout["practised"] > 0, "user_id"]
        students = sorted(practised.unique())[:5]
        name = "mastered topics are not recommended"
        control = "the same topic failing is recommended"
        if not students:
            return {name: (False, "no hold-out student has practised a topic")}
        frames = from_snapshot(ctx.snapshot_dir, RECOMMEND_TABLES)
        answerable = set(frames.as_of(origin)["questions"]["topic_id"])
        count = p.mastery_min_attempts + 5
        excluded, kept, probed = 0, 0, 0
        for user in students:
            # One student's rows, with every student's question ratings, as serving and
            # training see them (a topic's mean rating is over all students).
            mine = SourceFrames(
                frames.for_users([user]).tables | {"question_ratings": frames["question_ratings"]}
            )
            ranked = predict(candidate_topics(mine, origin)[INPUT_COLUMNS])
            choices = [int(t) for t in ranked["topic_id"] if int(t) in answerable]
            if not choices:
                continue
            target, probed = choices[0], probed + 1
            for correct in (True, False):
                rows = candidate_topics(
                    with_practice_on_topic(mine, user, target, origin, correct, count), origin
                )
                served = predict(rows[INPUT_COLUMNS])
                top = set(served.loc[served["rank"] <= p.top_k, "topic_id"].astype(int))
                if correct:
                    excluded += target not in top
                else:
                    kept += target in top
        if probed == 0:
            return {name: (False, "no probed student has a topic with questions sat")}
        return {
            name: (
                excluded == probed,
                f"{excluded}/{probed} hold-out students' first choice out of the top "
                f"{p.top_k} with {count} recent answers all right",
            ),
            control: (
                kept == probed,
                f"{kept}/{probed} in the top {p.top_k} with those answers all wrong",
            ),
        }

    def request_samples(self, data: RecommenderData, count: int) -> list[pd.DataFrame]:
        """Single-student requests as serving sends them: each of `count` hold-out
        students' candidate rows (the gate times `predict` on them)."""
        holdout = data.holdout
        students = sorted(holdout["user_id"].unique())[:count]
        return [
            holdout.loc[holdout["user_id"] == s, INPUT_COLUMNS].reset_index(drop=True)
            for s in students
        ]

    def finish(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        best_params: dict[str, Any],
        cv_score: float,
    ) -> Outcome:
        """Refit the winner on every training student, calibrate its confidence on
        out-of-fold predictions, and evaluate it next to the baselines on the hold-out;
        also the same scorer without its collaborative part (an ablation, not a baseline)."""
        from optuna.trial import FixedTrial

        from training import reports, tracking

        p = TopicRecommenderParams.from_params(ctx.params)
        hp = suggest(FixedTrial(best_params), p)
        train, holdout = data.train, data.holdout
        # One thread beats two on 2 shared cores (OpenMP workers spin while waiting).
        with threadpool_limits(1):
            recommender = fit_recommender(data, hp, p, ctx.seed)
            without_cf = TwoStageScorer.fit(
                with_context(train, p.prior_answers), p, hp, ctx.seed, OWN_FEATURES
            )
        model = TopicRecommenderPyfunc(recommender)
        truth = (
            truth_relevance(ctx.truth_dir, data.holdout_origin, p.truth_top_k)
            if ctx.truth_dir
            else None
        )
        report, confidences = evaluate(
            lambda frame: model.predict(None, frame), data, p, ctx.seed, truth
        )
        ablation = without_cf.probability(with_context(holdout, p.prior_answers))
        report["ablation_without_cf"] = method_metrics(
            holdout, ablation, ablation, p, len(data.topics)
        )
        report["cv_ndcg"] = cv_score
        markdown = report_markdown(report, data, p)
        shown = ~np.isnan(confidences["model"])
        methods = {k: v for k, v in report.items() if isinstance(v, dict) and "coverage" in v}

        def plots(folder: Path) -> object:
            return [
                *reports.metric_bars(
                    folder,
                    methods,
                    ["ndcg_5", f"ndcg_{p.top_k}", f"recall_{p.top_k}"],
                    "ranking.png",
                ),
                *reports.classification_plots(
                    folder,
                    holdout[LABEL].to_numpy()[shown],
                    {name.removeprefix("baseline_"): c[shown] for name, c in confidences.items()},
                    positive="relevant topics",
                ),
            ]

        return Outcome(
            python_model=model,
            input_example=candidate_example(holdout),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=self.main_metric,
            main_label="hold-out NDCG@10",
            params={"holdout_origin": f"{data.holdout_origin:%Y-%m-%d}", **hp},
            plots=plots,
        )


def candidate_example(rows: pd.DataFrame) -> pd.DataFrame:
    """One real student's candidate rows, as the builder gives them (the input example)."""
    student = rows.loc[rows["practised"] > 0, "user_id"].iloc[0]
    return rows.loc[rows["user_id"] == student, INPUT_COLUMNS].reset_index(drop=True)


SPEC = TopicRecommenderSpec()


def with_practice_on_topic(
    frames: SourceFrames, user: str, topic: int, origin: datetime, correct: bool, count: int
) -> SourceFrames:
    """The frames with every answer of `user` on `topic` made right (or wrong), and `count`
    more such answers on the topic's questions sat by `origin`, one an hour back from it
    (so within the last 30 days): the probe of the behavioural checks. The added rows copy
    the student's latest answer before `origin` (its test, its timing)."""
    answers = frames["test_answers"]
    questions = frames.as_of(origin)["questions"]
    on_topic = questions.loc[questions["topic_id"] == topic, "id"].to_numpy()
    edited = answers.copy()
    mine = (edited["user_id"] == user) & edited["question_id"].isin(set(on_topic))
    edited.loc[mine, "is_correct"] = correct
    own = edited[edited["user_id"] == user].sort_values("answered_at")
    earlier = own[own["answered_at"] <= pd.Timestamp(origin)]
    template = earlier.tail(1) if len(earlier) else own.head(1)
    added = template.loc[template.index.repeat(count)].reset_index(drop=True)
    added["id"] = int(answers["id"].max()) + 1 + np.arange(count)
    added["question_id"] = np.resize(on_topic, count)
    added["is_correct"] = correct
    added["answered_at"] = pd.Timestamp(origin) - pd.to_timedelta(np.arange(1, count + 1), "h")
    return SourceFrames(
        frames.tables | {"test_answers": pd.concat([edited, added], ignore_index=True)}
    )
