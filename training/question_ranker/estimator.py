"""Fitting the question ranker: the Optuna search space (`suggest`), the two heads, the
rolling out-of-time predictions that validate (tuning) and calibrate them, and the refit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.metrics import ranking_metrics
from training.question_ranker.data import CutOff, RankerData, list_ids, lists_of
from training.question_ranker.inference import (
    NAMED_COLUMNS,
    FittedRanker,
    expected_gain,
    logit,
    one_thread,
)
from training.question_ranker.params import QuestionRankerParams
from training.tuning import pruning_reporter

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
    draws = p.search_space.draws(trial, LOG_SCALE)
    integer, real = draws.integer, draws.real
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


def _platt(probability: np.ndarray, outcome: np.ndarray) -> LogisticRegression | None:
    """Platt scaling of out-of-time probabilities (None when one class only)."""
    if len(np.unique(outcome)) < 2:
        return None
    return LogisticRegression().fit(logit(probability), outcome)


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


def objective(data: RankerData, p: QuestionRankerParams, seed: int) -> Callable[[Any], float]:
    """Mean NDCG@k over the validation cut-offs before the first test year, each ranked
    by heads fitted on the cut-offs before it."""
    tuning_cutoffs = data.before(data.test_years[0])

    def score(trial: Any) -> float:
        config = suggest(trial, p, seed)
        report = pruning_reporter(trial)
        frames, scores = [], []
        for step, (cutoff, topic, repeat) in enumerate(
            rolling_predictions(data, config, tuning_cutoffs, p.cv_folds, seed)
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
