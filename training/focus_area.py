"""Focus-area identifier: is a topic weak for a student, from the student's test results?

Examples are (student, topic) pairs at a point in time t: features are the student's test
statistics on the topic up to t (`features.focus`); the label comes from the source
itself: the student's accuracy on the topic over the following window falls below a
threshold (`params.yaml: focus_area`), either as the raw share of right answers or judged
against the difficulty of the questions answered (`label_basis`, see `later_results`).
The generator's true weak topics are never a training input; they are a second yardstick
for evaluation on synthetic data.

Candidates (Random Forest, Extra Trees, an RBF-kernel SVM via Nystroem features, and
gradient boosting) compete inside one Optuna study; the decision threshold is then chosen
on out-of-fold predictions of the training students.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.base import ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from core.config import params_section
from core.exceptions import ConfigError, SourceDataError
from features.focus import (
    EXPECTED_BY_DIFFICULTY,
    FEATURE_COLUMNS,
    answer_table,
    feature_matrix,
    topic_test_stats,
)
from features.frames import SourceFrames, from_snapshot
from training.metrics import binary_classification
from training.model_spec import Outcome, TrainingContext
from training.slices import student_topic_slices, with_slice_columns
from training.splits import group_folds, window_split

NAME = "prepiq-focus-area"
LABEL = "weak"
REQUIREMENTS = ["mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle"]


@dataclass(frozen=True)
class FocusAreaParams:
    """The knobs of `params.yaml: focus_area`."""

    label_window_days: int = 30
    weak_threshold: float = 0.5
    min_label_answers: int = 8
    label_basis: Literal["raw", "adjusted"] = "raw"
    monotone: bool = True
    origin_step_days: int = 14
    first_origin_days: int = 30
    holdout_fraction: float = 0.2
    cv_folds: int = 3
    trials: int = 12
    target_accuracy: float = 0.7
    candidates: tuple[str, ...] = ("random_forest", "extra_trees", "svm", "gradient_boosting")
    search_space: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label_basis not in LABEL_BASES:
            raise ConfigError(
                f"params.yaml focus_area.label_basis: {self.label_basis!r} is not one of "
                f"{', '.join(LABEL_BASES)}"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FocusAreaParams:
        known = params_section(params, "focus_area", cls.__dataclass_fields__, DEFAULT_SPACE)
        return cls(**known)


LABEL_BASES = ("raw", "adjusted")
# The direction each feature may move the weak probability in when `monotone` is on:
# more right answers never make a topic weaker (-1), more repeated wrong options, rushed
# wrong answers or skips never make it stronger (+1). Trees fitted to a few thousand
# noisy labels otherwise learn local reversals that a student who answers a topic all
# right can land in. 0: unconstrained.
MONOTONE = {
    "accuracy": -1,
    "smoothed_accuracy": -1,
    "accuracy_last_14d": -1,
    "accuracy_last_30d": -1,
    "difficulty_adjusted_accuracy": -1,
    "student_adjusted_accuracy": -1,
    "relative_adjusted_accuracy": -1,
    "student_shrunk_accuracy": -1,
    "recency_weighted_accuracy": -1,
    "adjusted_accuracy_last_30d": -1,
    "hard_question_accuracy": -1,
    "rushed_wrong_share": 1,
    "repeated_wrong_option_share": 1,
    "skip_share": 1,
}


def monotone_constraints(p: FocusAreaParams) -> list[int] | None:
    """The tree families' `monotonic_cst`, in `FEATURE_COLUMNS` order (None: off)."""
    return [MONOTONE.get(column, 0) for column in FEATURE_COLUMNS] if p.monotone else None


# A question's observed share of right answers is shrunk toward the app's rating of it
# (`features.focus.EXPECTED_BY_DIFFICULTY`) by this many pseudo-answers.
QUESTION_PRIOR_ANSWERS = 10


def question_rates(questions: pd.DataFrame, known: pd.DataFrame) -> pd.Series:
    """Each question's expected share of right answers (index: question id): its observed
    rate over the answers in `known` (`answer_table` rows), shrunk toward the app's rating
    so a question answered a few times (or never) keeps about its rated rate."""
    prior = questions.set_index("id")["difficulty"].map(EXPECTED_BY_DIFFICULTY).astype(float)
    observed = known.groupby("question_id")["correct"].agg(["sum", "size"])
    observed = observed.reindex(prior.index).fillna(0.0)
    return (observed["sum"] + QUESTION_PRIOR_ANSWERS * prior) / (
        observed["size"] + QUESTION_PRIOR_ANSWERS
    )


def later_results(
    frames: SourceFrames,
    answers: pd.DataFrame,
    origin: datetime,
    p: FocusAreaParams,
    known: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (student, topic) with at least `min_label_answers` answers in the label window
    after `origin`: `later_accuracy` (what the label thresholds) and `later_answers`.

    `raw`: the share of right answers in the window. `adjusted`: the same answers judged
    against the questions they were: the mean of (right - the question's expected rate)
    plus the topic's reference rate (the mean expected rate over all the topic's
    questions), i.e. the share the student would get on the topic's questions as a whole,
    not on the draw of easy or hard ones they happened to get. The expected rates come
    from `known` (answers given up to `origin`; default: those in `answers`), never from
    the window itself."""
    end = origin + timedelta(days=p.label_window_days)
    at = answers["answered_at"]
    later = answers[(at > pd.Timestamp(origin)) & (at <= pd.Timestamp(end))]
    keys = ["user_id", "topic_id"]
    if p.label_basis == "adjusted":
        if known is None:
            known = answers
        known = known[known["answered_at"] <= pd.Timestamp(origin)]
        questions = frames["questions"][["id", "topic_id", "difficulty"]]
        rates = question_rates(questions, known)
        reference = rates.groupby(questions.set_index("id")["topic_id"]).mean()
        later = later.assign(correct=later["correct"] - later["question_id"].map(rates))
    outcome = later.groupby(keys)["correct"].agg(["mean", "size"])
    outcome = outcome[outcome["size"] >= p.min_label_answers]
    if p.label_basis == "adjusted":
        topics = outcome.index.get_level_values("topic_id")
        outcome["mean"] += reference.reindex(topics).to_numpy()
    return outcome.rename(columns={"mean": "later_accuracy", "size": "later_answers"}).reset_index()


def examples_at(
    frames: SourceFrames,
    origin: datetime,
    p: FocusAreaParams,
    answers: pd.DataFrame | None = None,
    known: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Labelled (student, topic) pairs at `origin`: features up to it, results after it
    (`later_results`). `answers` is `answer_table(frames)` when the caller already has
    it; `known` the answers the questions' expected rates of an adjusted label come from
    (every student's, of which those up to `origin` are used; default `answers`)."""
    features = topic_test_stats(frames, origin)
    answers = answer_table(frames) if answers is None else answers
    labelled = features.merge(
        later_results(frames, answers, origin, p, known), on=["user_id", "topic_id"]
    )
    labelled[LABEL] = (labelled["later_accuracy"] < p.weak_threshold).astype(int)
    labelled["origin"] = pd.Timestamp(origin)
    return labelled


@dataclass
class FocusAreaData:
    """Training examples (training students, earlier origins) and the hold-out (other
    students, the latest origin whose label window has passed)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_origin: datetime


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: FocusAreaParams, seed: int
) -> FocusAreaData:
    """Split by student and by time: hold-out students are scored at the last origin whose
    window has closed; training students at origins whose windows closed before it."""
    split = window_split(frames, as_of, p, seed)
    training_frames, holdout_frames = split.training, split.holdout
    train_origins, holdout_origin = split.train_origins, split.holdout_origin
    # The answer join is made once per group rather than once per origin. An adjusted
    # label's question rates come from every student's answers up to the origin (what the
    # source holds then; no answer of any label window is among them).
    training_answers = answer_table(training_frames)
    known = answer_table(frames) if p.label_basis == "adjusted" else None
    parts = [examples_at(training_frames, t, p, training_answers, known) for t in train_origins]
    train = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    holdout_answers = answer_table(holdout_frames)
    holdout = examples_at(holdout_frames, holdout_origin, p, holdout_answers, known)
    holdout = with_slice_columns(holdout, holdout_frames, holdout_answers, holdout_origin)
    for name, part in (("training", train), ("hold-out", holdout)):
        if len(part) == 0 or part[LABEL].nunique() < 2:
            raise SourceDataError(
                f"focus-area: too few labelled {name} examples ({len(part)}) with "
                f"params.yaml focus_area.label_window_days={p.label_window_days} and "
                f"min_label_answers={p.min_label_answers} on {len(frames['users'])} students; "
                "more history or a shorter window / fewer answers per label are needed"
            )
    return FocusAreaData(train=train, holdout=holdout, holdout_origin=holdout_origin)


DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "rf_trees": (50, 300),
    "rf_max_depth": (4, 16),
    "rf_min_samples_leaf": (1, 30),
    "rf_max_features": (0.3, 1.0),
    "et_trees": (50, 300),
    "et_max_depth": (4, 16),
    "et_min_samples_leaf": (1, 30),
    "et_max_features": (0.3, 1.0),
    "svm_gamma": (0.005, 0.5),
    "svm_c": (0.01, 10.0),
    "gb_iterations": (50, 400),
    "gb_learning_rate": (0.02, 0.3),
    "gb_leaf_nodes": (8, 64),
    "gb_l2": (1e-4, 1.0),
}
LOG_SCALE = {
    "rf_min_samples_leaf",
    "et_min_samples_leaf",
    "svm_gamma",
    "svm_c",
    "gb_learning_rate",
    "gb_leaf_nodes",
    "gb_l2",
}


def suggest(trial: Any, p: FocusAreaParams, seed: int) -> ClassifierMixin:
    """An Optuna trial's candidate: which family, and its hyperparameters (ranges from
    `params.yaml: focus_area.search_space`)."""
    space = DEFAULT_SPACE | {k: tuple(v) for k, v in p.search_space.items()}

    def integer(name: str, step: int = 1) -> int:
        low, high = space[name]
        return int(
            trial.suggest_int(
                name, int(low), int(high), step=step, log=name in LOG_SCALE and step == 1
            )
        )

    def real(name: str) -> float:
        low, high = space[name]
        return float(trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE))

    family = trial.suggest_categorical("family", list(p.candidates))
    if family == "random_forest":
        return RandomForestClassifier(
            n_estimators=integer("rf_trees", step=50),
            max_depth=integer("rf_max_depth"),
            min_samples_leaf=integer("rf_min_samples_leaf"),
            max_features=real("rf_max_features"),
            class_weight=trial.suggest_categorical("rf_class_weight", [None, "balanced"]),
            monotonic_cst=monotone_constraints(p),
            n_jobs=1,  # per-request predictions stay fast (no joblib overhead in serving)
            random_state=seed,
        )
    if family == "extra_trees":
        return ExtraTreesClassifier(
            n_estimators=integer("et_trees", step=50),
            max_depth=integer("et_max_depth"),
            min_samples_leaf=integer("et_min_samples_leaf"),
            max_features=real("et_max_features"),
            monotonic_cst=monotone_constraints(p),
            n_jobs=1,
            random_state=seed,
        )
    if family == "svm":
        return make_pipeline(
            StandardScaler(),
            Nystroem(gamma=real("svm_gamma"), n_components=300, random_state=seed),
            CalibratedClassifierCV(LinearSVC(C=real("svm_c"), random_state=seed), cv=3),
        )
    return HistGradientBoostingClassifier(
        max_iter=integer("gb_iterations", step=50),
        learning_rate=real("gb_learning_rate"),
        max_leaf_nodes=integer("gb_leaf_nodes"),
        l2_regularization=real("gb_l2"),
        monotonic_cst=monotone_constraints(p),
        random_state=seed,
    )


def out_of_fold(
    estimator: ClassifierMixin, frame: pd.DataFrame, folds: int, seed: int, report: Any = None
) -> np.ndarray:
    """Out-of-fold weak probabilities, folds grouped by student. `report(step, score)`
    may raise to prune a hopeless trial after any fold."""
    x, y = feature_matrix(frame), frame[LABEL].to_numpy()
    probability = np.full(len(frame), np.nan)
    for step, (fit_rows, score_rows) in enumerate(
        group_folds(frame["user_id"].to_numpy(), folds, seed)
    ):
        model = clone(estimator).fit(x[fit_rows], y[fit_rows])
        probability[score_rows] = model.predict_proba(x[score_rows])[:, 1]
        if report is not None:
            done = ~np.isnan(probability)
            report(step, binary_classification(y[done], probability[done])["pr_auc"])
    return probability


def best_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The decision threshold that maximises weak-class F1 on out-of-fold predictions."""
    candidates = np.linspace(0.1, 0.9, 81)
    scores = [binary_classification(y, probability, t)["f1"] for t in candidates]
    return float(candidates[int(np.argmax(scores))])


class ThresholdRule:
    """Baseline: weak when the (smoothed) accuracy so far is below the label's threshold."""

    def __init__(self, weak_threshold: float) -> None:
        self.weak_threshold = weak_threshold

    def weak_probability(self, frame: pd.DataFrame) -> np.ndarray:
        # Centred so that accuracy at the threshold maps to 0.5.
        return np.clip(
            0.5 + (self.weak_threshold - frame["smoothed_accuracy"].to_numpy()), 0.0, 1.0
        )


def logistic_baseline(train: pd.DataFrame, folds: int, seed: int) -> tuple[Pipeline, float]:
    """Baseline: logistic regression on the same features, with its decision threshold
    chosen the same way as the model's (on out-of-fold predictions), so F1 is compared
    fairly."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    y = train[LABEL].to_numpy()
    threshold = best_threshold(y, out_of_fold(model, train, folds, seed))
    return model.fit(feature_matrix(train), y), threshold


INPUT_COLUMNS = ["user_id", "topic_id", *FEATURE_COLUMNS]


def model_scores(
    predict: Callable[[pd.DataFrame], pd.DataFrame], examples: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """A model's weak probabilities and decisions on examples, through its `predict`."""
    predicted = predict(examples[INPUT_COLUMNS])
    return (
        predicted["weak_probability"].to_numpy(dtype=float),
        predicted["is_weak"].to_numpy(dtype=bool),
    )


def evaluate(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    data: FocusAreaData,
    p: FocusAreaParams,
    seed: int,
    truth: pd.DataFrame | None,
) -> dict[str, Any]:
    """Hold-out metrics of a model (its `predict` on `topic_test_stats` rows, as logged)
    next to both baselines, on the same examples; and, when the generator's truth is at
    hand, against the true weak topics."""
    holdout = data.holdout
    y = holdout[LABEL].to_numpy()
    logistic, logistic_threshold = logistic_baseline(data.train, p.cv_folds, seed)
    rule = ThresholdRule(p.weak_threshold).weak_probability(holdout)
    regression = logistic.predict_proba(feature_matrix(holdout))[:, 1]
    scored = {
        "model": model_scores(predict, holdout),
        "baseline_accuracy_rule": (rule, rule >= 0.5),
        "baseline_logistic_regression": (regression, regression >= logistic_threshold),
    }
    report: dict[str, Any] = {
        name: binary_classification(y, probability, decisions=decided)
        for name, (probability, decided) in scored.items()
    }
    if truth is not None:
        on_truth = holdout.merge(truth, on=["user_id", "topic_id"], how="inner")
        if len(on_truth):
            keep = holdout.set_index(["user_id", "topic_id"]).index.isin(
                on_truth.set_index(["user_id", "topic_id"]).index
            )
            true_weak = on_truth["is_weak"].astype(int).to_numpy()
            report["against_truth"] = {
                name: binary_classification(true_weak, probability[keep], decisions=decided[keep])
                for name, (probability, decided) in scored.items()
            }
            # How far the label itself agrees with the truth (scored by how far the later
            # result falls under the threshold): a label that measures the student, not
            # the draw of questions, agrees better.
            later = holdout["later_accuracy"].to_numpy()[keep]
            report["against_truth"]["label"] = binary_classification(
                true_weak,
                np.clip(0.5 + p.weak_threshold - later, 0.0, 1.0),
                decisions=y[keep].astype(bool),
            )
    return report


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


class FocusAreaSpec:
    """The focus-area identifier for the training run (`training.model_spec.ModelSpec`)."""

    name = NAME
    key = "focus-area"
    direction: Literal["minimize", "maximize"] = "maximize"
    main_metric = "f1"
    higher_is_better = True

    def default_trials(self, ctx: TrainingContext) -> int:
        return FocusAreaParams.from_params(ctx.params).trials

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> FocusAreaData:
        return make_dataset(frames, ctx.as_of, FocusAreaParams.from_params(ctx.params), ctx.seed)

    def objective(self, ctx: TrainingContext, data: FocusAreaData) -> Callable[[Any], float]:
        """PR-AUC of the weak class, out of fold over the training students."""
        from training.tuning import pruning_reporter

        p = FocusAreaParams.from_params(ctx.params)
        y = data.train[LABEL].to_numpy()

        def score(trial: Any) -> float:
            candidate = suggest(trial, p, ctx.seed)
            oof = out_of_fold(candidate, data.train, p.cv_folds, ctx.seed, pruning_reporter(trial))
            return binary_classification(y, oof)["pr_auc"]

        return score

    def evaluate(
        self,
        ctx: TrainingContext,
        data: FocusAreaData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """A model's hold-out report next to the baselines, and its Markdown tables."""
        from training import reports

        p = FocusAreaParams.from_params(ctx.params)
        truth = truth_at(ctx.truth_dir, data.holdout_origin) if ctx.truth_dir else None
        report = evaluate(predict, data, p, ctx.seed, truth)
        columns = ["accuracy", "f1", "pr_auc", "roc_auc", "brier", "ece", "n"]
        markdown = reports.markdown_table(
            f"{NAME}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d})",
            {k: v for k, v in report.items() if k != "against_truth"},
            columns,
        )
        if "against_truth" in report:
            markdown += "\n" + reports.markdown_table(
                "against the generator's true weak topics", report["against_truth"], columns
            )
        return report, markdown

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: FocusAreaData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """Hold-out metrics per slice the promotion gate compares (each with `n`): the
        topic's subject, new vs long-standing students (joined under
        `promotion.new_student_days` before the origin), low vs high recent activity
        (answers over the last 30 days below / at least the hold-out students' median)."""
        holdout = data.holdout
        y = holdout[LABEL].to_numpy()
        probability, decided = model_scores(predict, holdout)
        masks = student_topic_slices(holdout, ctx.params, NAME, self.key)
        return {
            name: binary_classification(y[rows], probability[rows], decisions=decided[rows])
            for name, rows in masks.items()
            if rows.any()
        }

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: FocusAreaData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue, on hold-out (student, topic) pairs
        with at least 10 answers (the first 5 by student and topic): with every answer on
        the topic made wrong, the topic is flagged weak; made right, its weak probability
        falls below half of that. Features are rebuilt at the hold-out origin from the
        snapshot's edited answers by `features.focus.topic_test_stats` (the builder serving
        uses), not by editing feature rows, so they stay coherent with each other."""
        from features.focus import TABLES as FOCUS_TABLES

        busy = data.holdout[data.holdout["attempts"] >= 10].sort_values(["user_id", "topic_id"])
        pairs = list(zip(busy["user_id"].head(5), busy["topic_id"].head(5), strict=True))
        if not pairs:
            return {"failing a topic flags it weak": (False, "no hold-out pair has 10 answers")}
        frames = from_snapshot(ctx.snapshot_dir, FOCUS_TABLES)
        verdicts: dict[bool, list[pd.Series]] = {False: [], True: []}
        for user, topic in pairs:
            mine = frames.for_users([user])
            for correct in (False, True):
                rebuilt = topic_test_stats(
                    with_answers_on_topic(mine, user, topic, correct), data.holdout_origin
                )
                row = rebuilt[rebuilt["topic_id"] == topic]
                verdicts[correct].append(predict(row[INPUT_COLUMNS]).iloc[0])
        flagged = sum(bool(v["is_weak"]) for v in verdicts[False])
        lowered = sum(
            float(right["weak_probability"]) < float(wrong["weak_probability"]) / 2
            for wrong, right in zip(verdicts[False], verdicts[True], strict=True)
        )
        n = len(pairs)
        return {
            "failing every question of a topic flags it weak": (
                flagged == n,
                f"{flagged}/{n} hold-out pairs flagged weak with every answer wrong",
            ),
            "answering a topic right lowers its weak probability": (
                lowered == n,
                f"{lowered}/{n} pairs at under half the all-wrong probability when all right",
            ),
        }

    def request_samples(self, data: FocusAreaData, count: int) -> list[pd.DataFrame]:
        """Single-student requests as serving receives them: each of `count` hold-out
        students' topic rows (the gate times `predict` on them)."""
        holdout = data.holdout
        students = sorted(holdout["user_id"].unique())[:count]
        return [holdout.loc[holdout["user_id"] == s, INPUT_COLUMNS] for s in students]

    def finish(
        self,
        ctx: TrainingContext,
        data: FocusAreaData,
        best_params: dict[str, Any],
        cv_score: float,
    ) -> Outcome:
        """Refit the winner on every training student, pick its threshold on out-of-fold
        predictions, and evaluate it next to the baselines on the hold-out."""
        from optuna.trial import FixedTrial

        from training import reports, tracking

        p = FocusAreaParams.from_params(ctx.params)
        y = data.train[LABEL].to_numpy()
        best = suggest(FixedTrial(best_params), p, ctx.seed)
        threshold = best_threshold(y, out_of_fold(best, data.train, p.cv_folds, ctx.seed))
        estimator = clone(best).fit(feature_matrix(data.train), y)
        model = FocusAreaPyfunc(estimator, threshold, p.target_accuracy)
        report, markdown = self.evaluate(ctx, data, lambda frame: model.predict(None, frame))
        holdout = data.holdout

        def plots(folder: Path) -> object:
            return reports.classification_plots(
                folder,
                holdout[LABEL].to_numpy(),
                {
                    "model": estimator.predict_proba(feature_matrix(holdout))[:, 1],
                    "accuracy rule": ThresholdRule(p.weak_threshold).weak_probability(holdout),
                },
            )

        return Outcome(
            python_model=model,
            input_example=holdout[INPUT_COLUMNS].head(5),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=self.main_metric,
            main_label="hold-out weak-class F1",
            params={"threshold": threshold, "holdout_origin": f"{data.holdout_origin:%Y-%m-%d}"},
            plots=plots,
        )


SPEC = FocusAreaSpec()


def with_answers_on_topic(
    frames: SourceFrames, user: str, topic: int, correct: bool
) -> SourceFrames:
    """The frames with every answer of `user` on `topic` made right (or wrong): the probe
    of the behavioural checks."""
    questions = frames["questions"]
    on_topic = set(questions.loc[questions["topic_id"] == topic, "id"])
    answers = frames["test_answers"].copy()
    mine = (answers["user_id"] == user) & answers["question_id"].isin(on_topic)
    answers.loc[mine, "is_correct"] = correct
    return SourceFrames(frames.tables | {"test_answers": answers})


def truth_at(truth_dir: Path, moment: datetime) -> pd.DataFrame | None:
    """The generator's true weak topics at the latest snapshot at or before `moment`
    (None when there is no ground truth: on a real Supabase)."""
    path = truth_dir / "mastery.parquet"
    if not path.exists():
        return None
    mastery = pd.read_parquet(path, columns=["user_id", "topic_id", "as_of", "is_weak"])
    dates = pd.to_datetime(mastery["as_of"])
    eligible = dates[dates <= pd.Timestamp(moment.date())]
    if eligible.empty:
        return None
    return mastery[dates == eligible.max()][["user_id", "topic_id", "is_weak"]]
