"""Fitting the topic recommender: the collaborative factors per origin, the two-stage
scorer, Optuna's search space, the out-of-fold probabilities the tuning objective and the
confidence calibration read, and the refit of the winner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from optuna.trial import FixedTrial
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from core.exceptions import SourceDataError
from training.metrics import ranking_by_group, ranking_metrics
from training.splits import group_folds
from training.topic_recommender.data import LABEL, RecommenderData, label_parts
from training.topic_recommender.inference import (
    HYBRID_FEATURES,
    OWN_FEATURES,
    CollaborativeFilter,
    HybridRecommender,
    MasteryRule,
    TwoStageScorer,
    feature_matrix,
    with_cf,
    with_context,
)
from training.topic_recommender.params import TopicRecommenderParams
from training.tuning import pruning_reporter

LOG_SCALE = {"als_regularization", "als_alpha", "gb_learning_rate", "gb_leaf_nodes", "gb_l2"}
INTEGERS = {"als_factors", "als_iterations", "gb_iterations", "gb_leaf_nodes", "gb_min_leaf"}


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


def fit_scorer(
    rows: pd.DataFrame,
    p: TopicRecommenderParams,
    hp: dict[str, Any],
    seed: int,
    columns: tuple[str, ...] = HYBRID_FEATURES,
) -> TwoStageScorer:
    """Fit both stages of a `TwoStageScorer` on labelled candidate rows with their context
    (and CF) columns."""
    x = feature_matrix(rows, columns)
    practised, improved = label_parts(rows, p)
    if len(np.unique(practised)) < 2 or len(np.unique(improved[practised])) < 2:
        raise SourceDataError(
            f"topic recommender: the training rows need topics practised and not, and "
            f"practised topics improved and not ({int(practised.sum())} of {len(rows)} "
            f"practised with params.yaml topic_recommender.min_window_answers="
            f"{p.min_window_answers}); more history or students are needed"
        )
    return TwoStageScorer(
        practice=make_scorer(hp, seed).fit(x, practised.astype(int)),
        improvement=make_scorer(hp, seed).fit(x[practised], improved[practised].astype(int)),
        columns=columns,
    )


# -- tuning -----------------------------------------------------------------------------


def suggest(trial: Any, p: TopicRecommenderParams) -> dict[str, Any]:
    """An Optuna trial's hyperparameters (ranges from `params.yaml:
    topic_recommender.search_space`)."""
    draws = p.search_space.draws(trial, LOG_SCALE)
    return {
        name: draws.integer(name) if name in INTEGERS else draws.real(name) for name in draws.ranges
    }


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
        scorer = fit_scorer(enriched.iloc[fit_rows], p, hp, seed)
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
    groups, shown, relevant = _ranked(rows, score, p, relevance)
    metrics = ranking_metrics(groups, shown, relevant, p.top_k)
    five = ranking_metrics(groups, shown, relevant, 5)
    # NDCG@10 always: it is the main metric the promotion gate compares, whatever top_k.
    ten = metrics if p.top_k == 10 else ranking_metrics(groups, shown, relevant, 10)
    return {"ndcg_5": five["ndcg_5"], "ndcg_10": ten["ndcg_10"], **metrics}


def ndcg_by_student(
    rows: pd.DataFrame, score: np.ndarray, p: TopicRecommenderParams, relevance: np.ndarray
) -> pd.Series:
    """NDCG@10 of each (student, origin) with a relevant topic, ranked as `rank_quality`
    ranks (for intervals over students)."""
    return ranking_by_group(*_ranked(rows, score, p, relevance), 10)["ndcg"]


def _ranked(
    rows: pd.DataFrame, score: np.ndarray, p: TopicRecommenderParams, relevance: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group per row, the score with mastered topics never shown, the relevance)."""
    groups = (rows["user_id"] + "@" + rows["origin"].astype(str)).to_numpy()
    rule = MasteryRule(p.mastery_min_attempts, p.mastery_accuracy)
    shown = np.where(rule.applies(rows), -np.inf, score)
    relevant = rows[LABEL].to_numpy() if relevance is None else relevance
    return groups, shown, relevant


def objective(
    data: RecommenderData, p: TopicRecommenderParams, seed: int
) -> Callable[[Any], float]:
    """NDCG@k, out of fold over the training students (every training origin)."""

    def score(trial: Any) -> float:
        hp = suggest(trial, p)
        with threadpool_limits(1):  # see `refit`
            oof = out_of_fold(data.train, data.topics, hp, p, seed, pruning_reporter(trial))
        return rank_quality(data.train, oof, p)[f"ndcg_{p.top_k}"]

    return score


# -- the refit --------------------------------------------------------------------------


def chosen_hyperparameters(
    best_params: dict[str, Any], p: TopicRecommenderParams
) -> dict[str, Any]:
    """The winning trial's hyperparameters, as `suggest` gave them to the trial."""
    return suggest(FixedTrial(best_params), p)


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
        scorer=fit_scorer(enriched, p, hp, seed),
        calibrator=calibrator,
        mastery=MasteryRule(p.mastery_min_attempts, p.mastery_accuracy),
        prior_answers=p.prior_answers,
    )


def refit(
    data: RecommenderData, hp: dict[str, Any], p: TopicRecommenderParams, seed: int
) -> tuple[HybridRecommender, TwoStageScorer]:
    """The winner refitted on every training student (`fit_recommender`), and the same
    scorer without its collaborative part (the report's ablation, not a baseline)."""
    # One thread beats two on 2 shared cores (OpenMP workers spin while waiting).
    with threadpool_limits(1):
        recommender = fit_recommender(data, hp, p, seed)
        without_cf = fit_scorer(
            with_context(data.train, p.prior_answers), p, hp, seed, OWN_FEATURES
        )
    return recommender, without_cf
