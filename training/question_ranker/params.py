"""The knobs of `params.yaml: question_ranker`, typed (the defaults live in params.yaml)."""

from __future__ import annotations

from typing import ClassVar, Literal

from training import model_params
from training.model_params import ModelParams

Family = Literal["gradient_boosting", "logistic_regression"]


class QuestionRankerParams(ModelParams):
    """The knobs of `params.yaml: question_ranker`."""

    SECTION: ClassVar[str] = "question_ranker"

    class SearchSpace(model_params.SearchSpace):
        """The [low, high] range of each hyperparameter Optuna searches."""

        recent_years: tuple[int, int]
        embedding_components: tuple[int, int]
        repeat_prior_weight: tuple[float, float]
        gb_iterations: tuple[int, int]
        gb_learning_rate: tuple[float, float]
        gb_leaf_nodes: tuple[int, int]
        gb_min_leaf: tuple[int, int]
        gb_l2: tuple[float, float]
        lr_c: tuple[float, float]

    min_history_years: int
    holdout_years: int
    cv_folds: int
    top_k: int
    candidates: tuple[Family, ...]  # the model families Optuna chooses between
    search_space: SearchSpace


PARAMS = QuestionRankerParams
