"""Progress forecaster: a student's syllabus completion at +30, +60 and +90 days, with an
80% interval, from the student's daily sequence (`features.progress.daily_sequences`).

The training run's entry (`training.model_spec.ModelSpec`); each hook calls into the
package: the examples and split (`data`), the network (`inference`), its training and
tuning (`estimator`), and the baselines, report and the promotion gate's checks
(`evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from features.frames import SourceFrames
from training import tracking
from training.live import LiveMonitoring
from training.model_spec import HoldoutSize, ModelSpec, Outcome, TrainingContext
from training.progress_forecaster import estimator, evaluation
from training.progress_forecaster.data import ForecastData, make_dataset
from training.progress_forecaster.inference import CARD, ProgressForecasterPyfunc
from training.progress_forecaster.monitoring import MONITORING
from training.progress_forecaster.params import ProgressForecasterParams

REQUIREMENTS = ["mlflow", "torch", "lightning", "pandas", "numpy", "cloudpickle"]


class ProgressForecasterSpec(ModelSpec[ProgressForecasterParams, ForecastData]):
    """The progress forecaster for the training run (`training.model_spec.ModelSpec`)."""

    card = CARD
    params_type = ProgressForecasterParams
    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    def build(self, ctx: TrainingContext, frames: SourceFrames) -> ForecastData:
        return make_dataset(frames, ctx.as_of, self.params(ctx), ctx.seed)

    def holdout_size(self, data: ForecastData) -> HoldoutSize:
        """Hold-out students forecast at the hold-out origin."""
        return HoldoutSize(
            len(np.unique(data.holdout.user_id)),
            "students",
            ("holdout_fraction", "horizons_days"),
        )

    def objective(self, ctx: TrainingContext, data: ForecastData) -> Callable[[Any], float]:
        """Mean MAE over horizons of the median forecast, over time-ordered folds grouped
        by student; the first fold's epochs feed the pruner."""
        return estimator.objective(data, self.params(ctx), ctx.seed)

    def evaluate(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """A model's report next to the baselines: on the hold-out, in a rolling-origin
        backtest of the hold-out students, and (synthetic data) against the generator's
        true completion after the snapshot; and its Markdown tables."""
        return evaluation.evaluate(data, predict, self.params(ctx), ctx.truth_dir)

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """Hold-out metrics per slice the promotion gate compares (each with `n`;
        `evaluation.slice_reports`), "new" meaning joined under
        `promotion.new_student_days` before the origin."""
        new_days = float(ctx.params.get("promotion", {}).get("new_student_days", 60))
        return evaluation.slice_reports(data, predict, self.params(ctx), new_days)

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue, "more study raises the forecast"
        (`evaluation.behaviour_checks`)."""
        return evaluation.behaviour_checks(ctx.snapshot_dir, data, predict, self.params(ctx))

    def request_samples(self, data: ForecastData, count: int) -> list[pd.DataFrame]:
        """Single-student requests as serving sends them (`evaluation.request_samples`)."""
        return evaluation.request_samples(data, count)

    def finish(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        best_params: dict[str, Any],
        cv_score: float,
    ) -> Outcome:
        """Refit the winner on every training example and evaluate it, as logged, next
        to the baselines."""
        p = self.params(ctx)
        forecaster = estimator.refit(data.train, best_params, p, ctx.seed)
        model = ProgressForecasterPyfunc(forecaster, p.window_days)
        report, markdown = self.evaluate(ctx, data, lambda frame: model.predict(None, frame))
        holdout = data.holdout
        methods = ["model", *(k for k in report if k.startswith("baseline_"))]

        def plots(folder: Path) -> object:
            quantiles = forecaster.predict(holdout.sequence, holdout.static)
            return evaluation.forecast_plots(folder, report, methods, p, quantiles, holdout.target)

        rows = data.latest.rows
        assert rows is not None
        return Outcome(
            python_model=model,
            input_example=rows[rows["user_id"] == rows["user_id"].iloc[0]].reset_index(drop=True),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=self.main_metric,
            main_label="hold-out mean MAE over the horizons (completion %)",
            higher_is_better=self.higher_is_better,
            params={
                "holdout_origin": f"{data.holdout_origin:%Y-%m-%d}",
                "training_examples": len(data.train),
                "training_origins": len(np.unique(data.train.origin)),
            },
            plots=plots,
        )

    @property
    def monitoring(self) -> LiveMonitoring:
        return MONITORING


SPEC = ProgressForecasterSpec()
