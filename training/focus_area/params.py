"""The knobs of `params.yaml: focus_area`, typed and validated once when read."""

from __future__ import annotations

from typing import ClassVar, Literal

from training.model_params import ModelParams, SearchSpace

# How the label judges the later answers (`training.focus_area.data.later_results`).
LabelBasis = Literal["raw", "adjusted"]
Candidate = Literal["random_forest", "extra_trees", "svm", "gradient_boosting"]


class FocusAreaSearchSpace(SearchSpace):
    """`focus_area.search_space`: the [low, high] of each hyperparameter Optuna searches
    (`training.focus_area.estimator.suggest`); integer ones where the estimator needs
    whole numbers."""

    rf_trees: tuple[int, int]
    rf_max_depth: tuple[int, int]
    rf_min_samples_leaf: tuple[int, int]
    rf_max_features: tuple[float, float]
    et_trees: tuple[int, int]
    et_max_depth: tuple[int, int]
    et_min_samples_leaf: tuple[int, int]
    et_max_features: tuple[float, float]
    svm_gamma: tuple[float, float]
    svm_c: tuple[float, float]
    gb_iterations: tuple[int, int]
    gb_learning_rate: tuple[float, float]
    gb_leaf_nodes: tuple[int, int]
    gb_l2: tuple[float, float]


class FocusAreaParams(ModelParams):
    """The knobs of `params.yaml: focus_area`."""

    SECTION: ClassVar[str] = "focus_area"

    label_window_days: int
    weak_threshold: float
    min_label_answers: int
    label_basis: LabelBasis
    monotone: bool
    origin_step_days: int
    first_origin_days: int
    holdout_fraction: float
    cv_folds: int
    target_accuracy: float
    candidates: tuple[Candidate, ...]
    search_space: FocusAreaSearchSpace


PARAMS = FocusAreaParams
