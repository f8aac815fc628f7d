"""Fitting the focus-area classifier: the candidates (Random Forest, Extra Trees, an
RBF-kernel SVM via Nystroem features, and gradient boosting) and their Optuna search
space, out-of-fold predictions over the training students, the decision threshold chosen
on them, and the refit of the winner."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from optuna.trial import FixedTrial
from sklearn.base import ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from features.focus import FEATURE_COLUMNS, feature_matrix
from training.focus_area.data import LABEL
from training.focus_area.params import FocusAreaParams
from training.metrics import binary_classification
from training.splits import group_folds

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
    draws = p.search_space.draws(trial, LOG_SCALE)
    integer, real = draws.integer, draws.real
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


def refit(
    train: pd.DataFrame, best_params: dict[str, Any], p: FocusAreaParams, seed: int
) -> tuple[ClassifierMixin, float]:
    """The winning trial's candidate fitted on every training student, and its decision
    threshold picked on its out-of-fold predictions."""
    y = train[LABEL].to_numpy()
    best = suggest(FixedTrial(best_params), p, seed)
    threshold = best_threshold(y, out_of_fold(best, train, p.cv_folds, seed))
    return clone(best).fit(feature_matrix(train), y), threshold
