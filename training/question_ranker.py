"""Question-importance ranker: rank a subject's candidate questions for its next paper.

Candidates are the distinct question texts of a subject's past papers up to a cut-off
year t (`features.questions.question_history`). Labels come from the source itself, the
paper of year t+1 (papers are cut with `SourceFrames.as_of` on their exam date):

- grade 2: the same question (same normalised text) is set again in year t+1;
- grade 1: it is not, but its topic comes up in year t+1;
- grade 0: neither.

NDCG uses the gains 2^grade - 1 (0, 1, 3). Two heads of one family (gradient boosting or
logistic regression, chosen by Optuna) estimate P(topic comes up) and P(question comes
back) from the history features and the text features: MiniLM embeddings (reduced by PCA
inside the scorer), and MiniLM and TF-IDF similarities to the subject's and the topic's
recent questions. A question comes back only a few dozen times a year, so the learned
P(question) is blended with the history's structured estimate (`expected_repeat`: the
topic's forecast questions times the question's share of them) by a tuned weight.
Candidates are ranked by the expected gain P(topic) + 2 P(question); each probability is
then calibrated (Platt scaling fitted on out-of-time predictions).

Splits are by time only: past papers are catalogue data, the same for every student, so
there are no students to hold out. Hold-out is rolling: each of the last `holdout_years`
years is ranked by a model fitted only on earlier cut-offs (whose next papers were sat by
then). Tuning validates time-ordered too: each of the last `cv_folds` cut-offs before the
first test year is ranked by a model fitted on the cut-offs before it. The logged model
is fitted like the last test year's (without the labels of the last paper in the source,
which stays its hold-out for `evaluate` and the promotion gate) and ranks from every paper.
The generator's held-back next paper (`next_papers.parquet`) is a second yardstick, never
an input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.base import ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from core.config import params_section
from core.exceptions import ConfigError
from features.frames import SourceFrames, from_snapshot
from features.questions import (
    CANDIDATE_COLUMNS,
    NUMERIC_COLUMNS,
    RECENT_YEARS,
    TABLES,
    TEXT_COLUMNS,
    TextReference,
    normalise_text,
    past_questions,
    question_history,
    rows_for_texts,
)
from features.text import ENCODER_NAME, ENCODER_PACKAGE, EmbeddingCache, load_encoder
from training.metrics import binary_classification, precision_at_k, ranking_metrics
from training.model_spec import Outcome, TrainingContext

NAME = "prepiq-question-ranker"
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


@dataclass(frozen=True)
class QuestionRankerParams:
    """The knobs of `params.yaml: question_ranker`."""

    min_history_years: int = 3
    holdout_years: int = 3
    cv_folds: int = 3
    top_k: int = 10
    trials: int = 40
    candidates: tuple[str, ...] = ("gradient_boosting", "logistic_regression")
    search_space: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> QuestionRankerParams:
        known = params_section(params, "question_ranker", cls.__dataclass_fields__, DEFAULT_SPACE)
        return cls(**known)


DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "recent_years": (1, 4),
    "embedding_components": (0, 16),
    "repeat_prior_weight": (0.0, 1.0),
    "gb_iterations": (50, 300),
    "gb_learning_rate": (0.02, 0.2),
    "gb_leaf_nodes": (4, 32),
    "gb_min_leaf": (5, 80),
    "gb_l2": (1e-4, 1.0),
    "lr_c": (0.01, 10.0),
}
LOG_SCALE = {"gb_learning_rate", "gb_l2", "lr_c", "gb_min_leaf"}


@dataclass(frozen=True)
class RankerConfig:
    """One trial's choice: the text-feature knobs, the scorer of both heads, and the weight
    of the structured estimate in P(question comes back)."""

    recent_years: int
    embedding_components: int
    repeat_prior_weight: float
    scorer: ClassifierMixin


def suggest(trial: Any, p: QuestionRankerParams, seed: int) -> RankerConfig:
    """An Optuna trial's configuration (ranges from `params.yaml: question_ranker`)."""
    space = DEFAULT_SPACE | {k: tuple(v) for k, v in p.search_space.items()}

    def integer(name: str) -> int:
        low, high = space[name]
        return int(trial.suggest_int(name, int(low), int(high), log=name in LOG_SCALE))

    def real(name: str) -> float:
        low, high = space[name]
        return float(trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE))

    recent_years = integer("recent_years")
    components = integer("embedding_components")
    prior_weight = real("repeat_prior_weight")
    family = trial.suggest_categorical("family", list(p.candidates))
    scorer: ClassifierMixin
    if family == "gradient_boosting":
        scorer = HistGradientBoostingClassifier(
            max_iter=integer("gb_iterations"),
            learning_rate=real("gb_learning_rate"),
            max_leaf_nodes=integer("gb_leaf_nodes"),
            min_samples_leaf=integer("gb_min_leaf"),
            l2_regularization=real("gb_l2"),
            random_state=seed,
        )
    else:
        scorer = make_pipeline(
            StandardScaler(), LogisticRegression(C=real("lr_c"), max_iter=2000, random_state=seed)
        )
    return RankerConfig(recent_years, components, prior_weight, scorer)


def head(config: RankerConfig, seed: int) -> Pipeline:
    """An unfitted head: history and similarity columns as they are, the embedding reduced
    to `embedding_components` principal components (dropped at 0), then the scorer."""
    named = len(NAMED_COLUMNS)
    embedding: Any = (
        PCA(n_components=config.embedding_components, random_state=seed)
        if config.embedding_components
        else "drop"
    )
    columns = ColumnTransformer(
        [("named", "passthrough", slice(0, named)), ("embedding", embedding, slice(named, None))]
    )
    return Pipeline([("features", columns), ("scorer", clone(config.scorer))])


def candidate_features(
    candidates: pd.DataFrame, reference: TextReference, embeddings: EmbeddingCache
) -> np.ndarray:
    """The scorer's input for `question_history` rows: history, text similarities, and
    the text's embedding (training and serving both call this)."""
    vectors = embeddings.embed(candidates["text"].tolist())
    similarities = reference.similarities(candidates, vectors)
    history = candidates[list(HISTORY_COLUMNS)].to_numpy(dtype=float)
    return np.hstack([history, similarities.to_numpy(), vectors])


def grades(candidates: pd.DataFrame, next_questions: pd.DataFrame) -> np.ndarray:
    """2 when the candidate's text is in the next paper of its subject, 1 when its topic
    is, else 0 (`next_questions`: subject_id, topic_id, text)."""
    asked = pd.MultiIndex.from_arrays(
        [next_questions["subject_id"], next_questions["text"].map(normalise_text)]
    )
    topics = pd.MultiIndex.from_frame(next_questions[["subject_id", "topic_id"]])
    repeat = pd.MultiIndex.from_frame(candidates[["subject_id", "candidate_key"]]).isin(asked)
    topic = pd.MultiIndex.from_frame(candidates[["subject_id", "topic_id"]]).isin(topics)
    return np.where(repeat, 2, np.where(topic, 1, 0))


@dataclass
class CutOff:
    """The candidates at the end of an exam year, and the questions sat up to then."""

    year: int
    candidates: pd.DataFrame  # question_history rows (+ "grade" when labelled)
    questions: pd.DataFrame  # past_questions up to the cut-off


@dataclass
class RankerData:
    """Labelled cut-offs in time order, the latest history (every paper sat by as_of,
    unlabelled), which cut-off years are ranked as hold-out tests, and the text caches."""

    cutoffs: list[CutOff]
    latest: CutOff
    test_years: list[int]
    embeddings: EmbeddingCache
    _matrices: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    _references: dict[tuple[int, int], TextReference] = field(default_factory=dict)

    def reference(self, cutoff: CutOff, years: int) -> TextReference:
        key = (cutoff.year, years)
        if key not in self._references:
            self._references[key] = TextReference.fit(
                cutoff.questions, years, self.embeddings.embed
            )
        return self._references[key]

    def features(self, cutoff: CutOff, years: int) -> np.ndarray:
        """A cut-off's feature matrix for a reference window (computed once per pair)."""
        key = (cutoff.year, years)
        if key not in self._matrices:
            self._matrices[key] = candidate_features(
                cutoff.candidates, self.reference(cutoff, years), self.embeddings
            )
        return self._matrices[key]

    def before(self, year: int | None) -> list[CutOff]:
        """The labelled cut-offs whose next paper was sat by the end of `year` (all: None)."""
        return [c for c in self.cutoffs if year is None or c.year < year]


def cutoff_moment(papers: pd.DataFrame, year: int) -> datetime:
    """The end of the last exam day of `year`."""
    last_day = max(papers.loc[papers["exam_year"] == year, "exam_date"])
    return datetime.combine(last_day, time.max, tzinfo=UTC)


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: QuestionRankerParams, encoder: Any = None
) -> RankerData:
    """Cut-offs from the `min_history_years`-th exam year to the one before the last, each
    labelled by the next year's papers; every distinct text is encoded once."""
    frames = SourceFrames({name: frames[name] for name in TABLES}).as_of(as_of)
    papers = frames["past_papers"]
    years = sorted(int(y) for y in papers["exam_year"].unique())
    sat = past_questions(frames)
    cutoffs = []
    for year in years[p.min_history_years - 1 : -1]:
        moment = cutoff_moment(papers, year)
        candidates = question_history(frames, moment)
        following = sat[sat["exam_year"] == year + 1]
        # A subject without a paper next year has no labels (not "nothing came up").
        candidates = candidates[candidates["subject_id"].isin(following["subject_id"])]
        candidates = candidates.reset_index(drop=True)
        candidates["grade"] = grades(candidates, following)
        cutoffs.append(CutOff(year, candidates, sat[sat["exam_year"] <= year]))
    if len(cutoffs) < p.holdout_years + p.cv_folds + 1:
        raise ConfigError(
            f"question_ranker: {len(years)} exam years give {len(cutoffs)} cut-offs, too few "
            f"for {p.holdout_years} hold-out years and {p.cv_folds} validation folds"
        )
    embeddings = EmbeddingCache(encoder)
    embeddings.embed(sat["text"].drop_duplicates().tolist())  # every text, in one batch
    latest = CutOff(years[-1], question_history(frames, as_of), sat)
    return RankerData(
        cutoffs=cutoffs,
        latest=latest,
        test_years=[c.year for c in cutoffs[-p.holdout_years :]],
        embeddings=embeddings,
    )


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
        with one_thread():  # see `fit_heads`
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


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped)).reshape(-1, 1)


def _calibrate(calibration: LogisticRegression | None, probability: np.ndarray) -> np.ndarray:
    if calibration is None:
        return probability
    return calibration.predict_proba(_logit(probability))[:, 1]


def _platt(probability: np.ndarray, outcome: np.ndarray) -> LogisticRegression | None:
    """Platt scaling of out-of-time probabilities (None when one class only)."""
    if len(np.unique(outcome)) < 2:
        return None
    return LogisticRegression().fit(_logit(probability), outcome)


def fit_heads(
    data: RankerData, config: RankerConfig, cutoffs: list[CutOff], seed: int
) -> FittedRanker:
    """Both heads fitted on the candidates of `cutoffs`."""
    x = np.vstack([data.features(c, config.recent_years) for c in cutoffs])
    grade = np.concatenate([c.candidates["grade"].to_numpy() for c in cutoffs])
    # One OpenMP thread: on a few thousand rows, boosting on two threads of a busy 2-core
    # machine took 7x longer (0.8 s against 0.11 s a fit).
    with one_thread():
        return FittedRanker(
            repeat_prior_weight=config.repeat_prior_weight,
            topic_head=head(config, seed).fit(x, grade >= 1),
            repeat_head=head(config, seed).fit(x, grade == 2),
        )


def rolling_predictions(
    data: RankerData, config: RankerConfig, cutoffs: list[CutOff], folds: int, seed: int
) -> Iterator[tuple[CutOff, np.ndarray, np.ndarray]]:
    """Each of the last `folds` of `cutoffs` ranked by heads fitted on the cut-offs before
    it: (cut-off, P(topic), P(question)), oldest first."""
    for index in range(max(len(cutoffs) - folds, 1), len(cutoffs)):
        ranker = fit_heads(data, config, cutoffs[:index], seed)
        topic, repeat = ranker.raw(data.features(cutoffs[index], config.recent_years))
        yield cutoffs[index], topic, repeat


def fit_ranker(
    data: RankerData, config: RankerConfig, cutoffs: list[CutOff], folds: int, seed: int
) -> FittedRanker:
    """Heads fitted on every cut-off given, calibrated on rolling out-of-time predictions
    of its last `folds` cut-offs."""
    ranker = fit_heads(data, config, cutoffs, seed)
    scored = list(rolling_predictions(data, config, cutoffs, folds, seed))
    grade = np.concatenate([c.candidates["grade"].to_numpy() for c, _, _ in scored])
    ranker.topic_calibration = _platt(np.concatenate([t for _, t, _ in scored]), grade >= 1)
    ranker.repeat_calibration = _platt(np.concatenate([r for _, _, r in scored]), grade == 2)
    return ranker


def list_ids(frame: pd.DataFrame) -> np.ndarray:
    """One ranked list per (year, subject)."""
    return (frame["year"].astype(np.int64) * 1000 + frame["subject_id"].astype(np.int64)).to_numpy()


def ranking_report(
    frame: pd.DataFrame,
    score: np.ndarray,
    topic_probability: np.ndarray | None,
    repeat_probability: np.ndarray | None,
    k: int,
) -> dict[str, float]:
    """NDCG@k (gains 2^grade - 1), precision@k of the question itself coming back and of its
    topic coming up, averaged over the lists; calibration of each probability (NaN for a
    method that gives none)."""
    grade = frame["grade"].to_numpy()
    groups = list_ids(frame)
    report = {
        f"ndcg_{k}": ranking_metrics(groups, score, 2.0**grade - 1, k)[f"ndcg_{k}"],
        f"precision_{k}": precision_at_k(groups, score, grade == 2, k),
        f"topic_precision_{k}": precision_at_k(groups, score, grade >= 1, k),
    }
    for name, probability, outcome in (
        ("", topic_probability, grade >= 1),
        ("repeat_", repeat_probability, grade == 2),
    ):
        calibration = (
            binary_classification(outcome, probability)
            if probability is not None
            else {"brier": float("nan"), "ece": float("nan")}
        )
        report[f"{name}brier"] = calibration["brier"]
        report[f"{name}ece"] = calibration["ece"]
    report["lists"] = float(len(np.unique(groups)))
    report["candidates"] = float(len(frame))
    return report


@dataclass
class MethodScores:
    """One method's ranking score on a cut-off's candidates, and its probabilities of the
    question or its topic coming up and of the question coming back (None: not given)."""

    score: np.ndarray
    topic: np.ndarray | None = None
    repeat: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> MethodScores:
        """The scores of some candidates only (a boolean mask)."""
        return MethodScores(
            self.score[rows],
            None if self.topic is None else self.topic[rows],
            None if self.repeat is None else self.repeat[rows],
        )


def model_scores(predicted: pd.DataFrame) -> MethodScores:
    """A model's scores from its pyfunc output."""
    return MethodScores(
        predicted["score"].to_numpy(dtype=float),
        predicted["probability"].to_numpy(dtype=float),
        predicted["repeat_probability"].to_numpy(dtype=float),
    )


def predicted_scores(
    cutoff: CutOff, predict: Callable[[pd.DataFrame], pd.DataFrame]
) -> MethodScores:
    """A model's scores on a cut-off's candidates, through its `predict` (on
    `question_history` rows, as logged)."""
    return model_scores(predict(cutoff.candidates[list(CANDIDATE_COLUMNS)]))


def lists_of(cutoff: CutOff) -> pd.DataFrame:
    """A labelled cut-off's candidates as the lists they are ranked in: one per subject,
    for the paper of the following year (`year`)."""
    return cutoff.candidates.assign(year=cutoff.year + 1)


def baseline_scores(
    candidates: pd.DataFrame, reference: TextReference, embeddings: EmbeddingCache
) -> dict[str, MethodScores]:
    """The baselines on one cut-off. The frequency baselines rank by the same expected gain
    as the model, from their own estimates (share of papers asking the question and its
    topic, plain or weighted to recent papers); TF-IDF similarity to the subject's recent
    papers gives a score only."""
    vectors = embeddings.embed(candidates["text"].tolist())
    tfidf = reference.similarities(candidates, vectors)["tfidf_recent_similarity"]
    frequency = candidates["topic_paper_share"].to_numpy(), candidates["asked_share"].to_numpy()
    recency = (
        candidates["topic_paper_share_recent"].to_numpy(),
        candidates["recency_weighted_share"].to_numpy(),
    )
    return {
        "baseline_frequency": MethodScores(expected_gain(*frequency), *frequency),
        "baseline_recency_weighted": MethodScores(expected_gain(*recency), *recency),
        "baseline_tfidf_similarity": MethodScores(tfidf.to_numpy()),
    }


def evaluate_lists(
    frame: pd.DataFrame, scored: list[dict[str, MethodScores]], k: int
) -> dict[str, Any]:
    """`ranking_report` per method over the lists of `frame` (its rows are the cut-offs'
    candidates in the order of `scored`)."""

    def stacked(parts: list[np.ndarray | None]) -> np.ndarray | None:
        return None if parts[0] is None else np.concatenate([q for q in parts if q is not None])

    report = {}
    for method in scored[0]:
        runs = [s[method] for s in scored]
        report[method] = ranking_report(
            frame,
            np.concatenate([r.score for r in runs]),
            stacked([r.topic for r in runs]),
            stacked([r.repeat for r in runs]),
            k,
        )
    return report


def score_cutoff(
    data: RankerData, cutoff: CutOff, predict: Callable[[pd.DataFrame], pd.DataFrame]
) -> dict[str, MethodScores]:
    """A model (its `predict` on `question_history` rows) and the baselines on a cut-off."""
    return {"model": predicted_scores(cutoff, predict)} | baseline_scores(
        cutoff.candidates, data.reference(cutoff, RECENT_YEARS), data.embeddings
    )


@dataclass
class HoldoutResult:
    """Every test year's candidates with their grades, and each method's scores on them."""

    frame: pd.DataFrame
    scored: list[dict[str, MethodScores]]


def holdout(
    data: RankerData, config: RankerConfig, p: QuestionRankerParams, seed: int
) -> HoldoutResult:
    """Rank each test year's candidates with a ranker fitted only on earlier cut-offs,
    through the same pyfunc serving loads (comparing texts with that cut-off's papers)."""
    frames, scored = [], []
    for cutoff in [c for c in data.cutoffs if c.year in data.test_years]:
        ranker = fit_ranker(data, config, data.before(cutoff.year), p.cv_folds, seed)
        model = QuestionRankerPyfunc(ranker, cutoff.questions, config.recent_years, data.embeddings)
        scored.append(score_cutoff(data, cutoff, partial(model.predict, None)))
        frames.append(lists_of(cutoff))
    return HoldoutResult(pd.concat(frames, ignore_index=True), scored)


def gate_holdout(data: RankerData) -> CutOff:
    """The hold-out of a registered version (`evaluate`, the promotion gate): the last
    labelled cut-off, graded by the last paper in the source, whose labels the logged model
    is never fitted on. The earlier test years of the rolling hold-out are not: the logged
    model is fitted on their labels."""
    return data.cutoffs[-1]


PROBE_SUBJECTS = 5  # subjects the behavioural check probes (one history rebuild for all)
NEVER_ASKED_SUFFIX = " Then answer it again for a case that no paper has set."


def repeated_every_year(
    frames: SourceFrames, subjects: list[int]
) -> tuple[SourceFrames, dict[int, pd.Series]]:
    """The behavioural check's edited source rows: in each subject, its question set in one
    paper only (the lowest id) is added to every other paper of the subject in `frames`
    (copies of its row with new ids). Returns the edited frames and each probed subject's
    repeated question (its `past_questions` row); a subject with no such question is
    skipped."""
    sat = past_questions(frames)
    papers_asking = sat.groupby(["subject_id", "candidate_key"])["paper_id"].transform("nunique")
    papers, questions = frames["past_papers"], frames["questions"]
    next_id = int(questions["id"].max()) + 1
    added, probes = [], {}
    for subject in subjects:
        once = sat[(sat["subject_id"] == subject) & (papers_asking == 1)]
        if once.empty:
            continue
        question = once.sort_values("id").iloc[0]
        others = papers.loc[
            (papers["subject_id"] == subject) & (papers["id"] != question["paper_id"]), "id"
        ].to_numpy()
        copies = questions[questions["id"] == question["id"]].iloc[[0] * len(others)].copy()
        copies["paper_id"] = others
        copies["id"] = np.arange(next_id, next_id + len(others))
        next_id += len(others)
        added.append(copies)
        probes[subject] = question
    edited = pd.concat([questions, *added], ignore_index=True)
    return SourceFrames(frames.tables | {"questions": edited}), probes


def judged_by_truth(data: RankerData, truth_dir: Path | None) -> CutOff | None:
    """The latest candidates (every paper as history) graded by the generator's held-back
    next paper; None without ground truth (on a real Supabase)."""
    path = truth_dir / "next_papers.parquet" if truth_dir else None
    if path is None or not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["subject_id", "exam_year", "topic_id", "text"])
    latest = data.latest
    candidates = latest.candidates[latest.candidates["subject_id"].isin(truth["subject_id"])]
    candidates = candidates.reset_index(drop=True)
    candidates["grade"] = grades(candidates, truth)
    return CutOff(int(truth["exam_year"].max()) - 1, candidates, latest.questions)


def markdown_tables(title: str, report: dict[str, Any], k: int) -> str:
    """The report's method rows, and its comparison with the truth when there is one."""
    from training import reports

    columns = [f"ndcg_{k}", f"precision_{k}", f"topic_precision_{k}", "brier", "ece"]
    columns += ["repeat_brier", "repeat_ece", "lists"]
    methods = {m: v for m, v in report.items() if m == "model" or m.startswith("baseline_")}
    markdown = reports.markdown_table(title, methods, columns)
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            "against the generator's held-back next paper (every paper as history)",
            report["against_truth"],
            columns,
        )
    return markdown


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


class QuestionRankerSpec:
    """The question-importance ranker for the training run (`training.model_spec`)."""

    name = NAME
    key = "question-ranker"
    direction: Literal["minimize", "maximize"] = "maximize"
    main_metric = "ndcg_10"
    higher_is_better = True

    def default_trials(self, ctx: TrainingContext) -> int:
        return QuestionRankerParams.from_params(ctx.params).trials

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> RankerData:
        return make_dataset(
            frames, ctx.as_of, QuestionRankerParams.from_params(ctx.params), load_encoder()
        )

    def objective(self, ctx: TrainingContext, data: RankerData) -> Callable[[Any], float]:
        """Mean NDCG@k over the validation cut-offs before the first test year, each ranked
        by heads fitted on the cut-offs before it."""
        from training.tuning import pruning_reporter

        p = QuestionRankerParams.from_params(ctx.params)
        tuning_cutoffs = data.before(data.test_years[0])

        def score(trial: Any) -> float:
            config = suggest(trial, p, ctx.seed)
            report = pruning_reporter(trial)
            frames, scores = [], []
            for step, (cutoff, topic, repeat) in enumerate(
                rolling_predictions(data, config, tuning_cutoffs, p.cv_folds, ctx.seed)
            ):
                frames.append(lists_of(cutoff))
                scores.append(expected_gain(topic, repeat))
                frame = pd.concat(frames, ignore_index=True)
                ndcg = ranking_metrics(
                    list_ids(frame),
                    np.concatenate(scores),
                    2.0 ** frame["grade"].to_numpy() - 1,
                    p.top_k,
                )[f"ndcg_{p.top_k}"]
                report(step, ndcg)
            return float(ndcg)

        return score

    def evaluate(
        self,
        ctx: TrainingContext,
        data: RankerData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """One model next to the baselines: on the latest paper in the source (a fair test
        only of a version trained before that paper was sat), and against the generator's
        held-back next paper with every paper as history."""
        p = QuestionRankerParams.from_params(ctx.params)
        last = gate_holdout(data)
        report = evaluate_lists(lists_of(last), [score_cutoff(data, last, predict)], p.top_k)
        judged = judged_by_truth(data, ctx.truth_dir)
        if judged is not None:
            report["against_truth"] = evaluate_lists(
                lists_of(judged), [score_cutoff(data, judged, predict)], p.top_k
            )
        title = (
            f"{NAME}: the paper of {last.year + 1} ranked from the papers up to {last.year} "
            "(out of time for a version fitted on this snapshot or an earlier one)"
        )
        return report, markdown_tables(title, report, p.top_k)

    def registered_sections(self, report: dict[str, Any]) -> dict[str, str]:
        """Where a training run's report scores the registered version as `evaluate` does
        (`prepiq reproduce`): the rolling hold-out's last year, whose ranker is fitted on
        the same cut-offs as the logged one (`finish`), and the score against the truth.
        The earlier years and the pooled figures (`model`, `baseline_*`) are rankers
        refitted per year, which no registered version holds."""
        last = max(report.get("holdout_by_year", {}), key=int, default=None)
        sections = {"against_truth": "against_truth"} if "against_truth" in report else {}
        if last is None:
            return sections
        return {
            name: f"holdout_by_year.{last}.{name}" for name in report["holdout_by_year"][last]
        } | sections

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: RankerData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """`ranking_report` of the model per subject ("subject <id>") on the rows `evaluate`
        scores (`gate_holdout`: the last paper in the source, ranked from the papers before
        it), so each slice is one subject's list; `n` is the number of candidates ranked.

        Left out, as they make no sense here:
        - the student slices (new vs long-standing, low vs high recent activity): past papers
          are catalogue data, the same for every student; no student's rows enter the
          candidates, the features or the labels, so there is nothing to split by student.
        - per hold-out year: the gate scores a registered version, which is fitted on the
          labels of every cut-off but the last (`finish`), so the earlier years of the
          training's rolling hold-out are in its training data (a slice there would judge
          fit, not generalisation), and the one year out of time for it is the main
          metric itself.
        """
        p = QuestionRankerParams.from_params(ctx.params)
        last = gate_holdout(data)
        frame = lists_of(last)
        scores = predicted_scores(last, predict)
        slices = {}
        for subject in sorted(frame["subject_id"].unique()):
            rows = (frame["subject_id"] == subject).to_numpy()
            report = evaluate_lists(frame[rows], [{"model": scores.subset(rows)}], p.top_k)
            slices[f"subject {int(subject)}"] = report["model"] | {"n": float(rows.sum())}
        return slices

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: RankerData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue: a question repeated every year ranks
        above one never asked. In each of the first `PROBE_SUBJECTS` subjects of the latest
        history, a question set once is added to every other past paper of the snapshot's
        source rows (`repeated_every_year`), the history is rebuilt at `as_of` by
        `features.questions.question_history` (the builder serving uses), and the subject's
        rows are ranked by `predict` as serving sends them, with a text never asked on the
        same topic (its row from `features.questions.rows_for_texts`, as serving builds a
        given text's: the topic's history, none of its own). The never-asked text is the
        repeated one with a clause added, so the two differ in their own history, not in
        topic, and hardly in wording. Passes when, in every probed subject, the repeated question has
        the better rank, a higher score and a higher P(question comes back)."""
        name = "a question repeated every year ranks above one never asked"
        frames = from_snapshot(ctx.snapshot_dir, TABLES).as_of(ctx.as_of)
        subjects = sorted(int(s) for s in data.latest.candidates["subject_id"].unique())
        edited, probes = repeated_every_year(frames, subjects[:PROBE_SUBJECTS])
        if not probes:
            return {name: (False, "no subject has a question set in one paper only to repeat")}
        history = question_history(edited, ctx.as_of)
        passed, details = 0, []
        for subject, question in probes.items():
            rows = history[history["subject_id"] == subject].reset_index(drop=True)
            never = rows_for_texts(
                rows, [(str(question["text"]) + NEVER_ASKED_SUFFIX, int(question["topic_id"]))]
            )
            request = pd.concat([rows, never], ignore_index=True)
            predicted = predict(request)
            mine = int(np.flatnonzero(request["candidate_key"] == question["candidate_key"])[0])
            repeated, new = predicted.iloc[mine], predicted.iloc[-1]
            ok = (
                int(repeated["rank"]) < int(new["rank"])
                and float(repeated["score"]) > float(new["score"])
                and float(repeated["repeat_probability"]) > float(new["repeat_probability"])
            )
            passed += ok
            details.append(
                f"subject {subject}: rank {int(repeated['rank'])} vs {int(new['rank'])} of "
                f"{len(request)}, P(comes back) {float(repeated['repeat_probability']):.3f} vs "
                f"{float(new['repeat_probability']):.3f}"
            )
        verdict = f"{passed}/{len(probes)} subjects (repeated vs never asked): "
        return {name: (passed == len(probes), verdict + "; ".join(details))}

    def request_samples(self, data: RankerData, count: int) -> list[pd.DataFrame]:
        """Single-subject requests as serving sends them (`rank_questions`: one subject's
        `question_history` rows, every paper as history), `count` of them cycling over the
        subjects of the latest history."""
        rows = data.latest.candidates[list(CANDIDATE_COLUMNS)]
        subjects = sorted(rows["subject_id"].unique())
        if not subjects:
            return []
        return [
            rows[rows["subject_id"] == subjects[i % len(subjects)]].reset_index(drop=True)
            for i in range(count)
        ]

    def finish(
        self, ctx: TrainingContext, data: RankerData, best_params: dict[str, Any], cv_score: float
    ) -> Outcome:
        """Rolling hold-out of the winner next to the baselines (refitted per test year),
        then the logged ranker: fitted on every cut-off, with every paper as history (also
        scored against the generator's next paper when it is at hand)."""
        from optuna.trial import FixedTrial

        from training import tracking

        p = QuestionRankerParams.from_params(ctx.params)
        k = p.top_k
        config = suggest(FixedTrial(best_params), p, ctx.seed)
        result = holdout(data, config, p, ctx.seed)
        report: dict[str, Any] = evaluate_lists(result.frame, result.scored, k)
        years = sorted(result.frame["year"].unique())
        report["holdout_by_year"] = {
            str(year): evaluate_lists(
                result.frame[result.frame["year"] == year].reset_index(drop=True), [scored], k
            )
            for year, scored in zip(years, result.scored, strict=True)
        }
        # Fitted without the last paper's labels, so that paper stays a hold-out for this
        # version (`evaluate`, the promotion gate); it still ranks from every paper.
        ranker = fit_ranker(data, config, data.before(years[-1] - 1), p.cv_folds, ctx.seed)
        model = QuestionRankerPyfunc(
            ranker, data.latest.questions, config.recent_years, data.embeddings
        )
        judged = judged_by_truth(data, ctx.truth_dir)
        if judged is not None:
            report["against_truth"] = evaluate_lists(
                lists_of(judged), [score_cutoff(data, judged, partial(model.predict, None))], k
            )
        title = f"{NAME}: rolling hold-out, the papers of {', '.join(map(str, years))}"
        markdown = markdown_tables(title, report, k)

        def plots(folder: Path) -> object:
            return holdout_plots(folder, result, report["holdout_by_year"], k)

        return Outcome(
            python_model=model,
            input_example=data.latest.candidates[list(CANDIDATE_COLUMNS)].head(5),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=f"ndcg_{k}",  # `main_metric` at the default top_k
            main_label=f"rolling hold-out NDCG@{k}",
            params={
                "test_years": ",".join(map(str, years)),
                "encoder": ENCODER_NAME,
                "recent_years": config.recent_years,
            },
            plots=plots,
        )


SPEC = QuestionRankerSpec()


def holdout_plots(
    folder: Path, result: HoldoutResult, by_year: dict[str, dict[str, Any]], k: int
) -> list[Path]:
    """NDCG@k per test year of every method, and the reliability of the model's two
    probabilities on the hold-out."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    import training.reports  # noqa: F401  the Agg backend, before any figure

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    years = list(by_year)
    methods = list(by_year[years[0]])
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        axes[0].bar(
            np.arange(len(years)) + index * width,
            [by_year[y][method][f"ndcg_{k}"] for y in years],
            width,
            label=method.removeprefix("baseline_"),
        )
    axes[0].set_xticks(np.arange(len(years)) + 0.4 - width / 2, years)
    axes[0].set(xlabel="test year", ylabel=f"NDCG@{k}", title="Rolling hold-out")
    axes[0].legend(fontsize=8)
    grade = result.frame["grade"].to_numpy()
    for label, part, outcome in (
        ("question or topic", "topic", grade >= 1),
        ("question", "repeat", grade == 2),
    ):
        probability = np.concatenate([getattr(s["model"], part) for s in result.scored])
        observed, predicted = calibration_curve(outcome, probability, n_bins=8, strategy="quantile")
        axes[1].plot(predicted, observed, marker="o", label=label)
    axes[1].plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes[1].set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    path = folder / "ranking.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]
