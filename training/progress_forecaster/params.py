"""The progress forecaster's section of params.yaml (`progress_forecaster`), typed."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from training import model_params
from training.model_params import ModelParams


class ProgressForecasterParams(ModelParams):
    """The knobs of `params.yaml: progress_forecaster`."""

    SECTION: ClassVar[str] = "progress_forecaster"

    horizons_days: tuple[int, ...]
    quantiles: tuple[float, ...]
    window_days: int
    origin_step_days: int
    first_origin_days: int
    holdout_fraction: float
    cv_folds: int
    cv_validation_origins: int
    slope_days: int
    more_study_penalty: float
    more_study_margin_points: float
    backtest_days_before_as_of: tuple[int, ...]
    batch_size: int
    torch_threads: int

    class SearchSpace(model_params.SearchSpace):
        """The [low, high] range of each hyperparameter Optuna searches (the integer ones
        are drawn with `suggest_int`)."""

        hidden_size: tuple[int, int]
        layers: tuple[int, int]
        dropout: tuple[float, float]
        learning_rate: tuple[float, float]
        epochs: tuple[int, int]

    search_space: SearchSpace

    @field_validator("quantiles")
    @classmethod
    def _has_a_median_between_bounds(cls, quantiles: tuple[float, ...]) -> tuple[float, ...]:
        if 0.5 not in quantiles or len(quantiles) < 3:
            raise ValueError("needs 0.5 (the point forecast) between a lower and an upper quantile")
        return quantiles

    @property
    def median(self) -> int:
        return self.quantiles.index(0.5)

    @property
    def interval_level(self) -> float:
        return max(self.quantiles) - min(self.quantiles)


PARAMS = ProgressForecasterParams
