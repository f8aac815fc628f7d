"""The topic recommender's section of params.yaml (`topic_recommender`), typed."""

from __future__ import annotations

from typing import ClassVar

from training import model_params
from training.model_params import ModelParams


class TopicRecommenderParams(ModelParams):
    """The knobs of `params.yaml: topic_recommender`."""

    SECTION: ClassVar[str] = "topic_recommender"

    label_window_days: int
    min_window_answers: int
    min_improvement: float
    prior_answers: float
    origin_step_days: int
    first_origin_days: int
    holdout_fraction: float
    cv_folds: int
    top_k: int
    truth_top_k: int
    mastery_min_attempts: int
    mastery_accuracy: float

    class SearchSpace(model_params.SearchSpace):
        """The [low, high] range of each hyperparameter Optuna searches (the integer ones
        are drawn with `suggest_int`)."""

        als_factors: tuple[int, int]
        als_regularization: tuple[float, float]
        als_iterations: tuple[int, int]
        als_alpha: tuple[float, float]
        als_gain_weight: tuple[float, float]
        gb_iterations: tuple[int, int]
        gb_learning_rate: tuple[float, float]
        gb_leaf_nodes: tuple[int, int]
        gb_l2: tuple[float, float]
        gb_min_leaf: tuple[int, int]

    search_space: SearchSpace


PARAMS = TopicRecommenderParams
