"""The focus-area identifier for the training run, the promotion gate and monitoring
(`training.model_spec.ModelSpec`): each hook calls into `data`, `estimator` and
`evaluation`.

Candidates (Random Forest, Extra Trees, an RBF-kernel SVM via Nystroem features, and
gradient boosting) compete inside one Optuna study; the decision threshold is then chosen
on out-of-fold predictions of the training students.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from features.frames import SourceFrames
from training import tracking
from training.focus_area import evaluation
from training.focus_area.data import LABEL, FocusAreaData, make_dataset
from training.focus_area.estimator import out_of_fold, refit, suggest
from training.focus_area.inference import CARD, INPUT_COLUMNS, REQUIREMENTS, FocusAreaPyfunc
from training.focus_area.monitoring import MONITORING
from training.focus_area.params import FocusAreaParams
from training.live import LiveMonitoring
from training.metrics import binary_classification
from training.model_spec import HoldoutSize, ModelSpec, Outcome, Predict, TrainingContext
from training.tuning import pruning_reporter


class FocusAreaSpec(ModelSpec[FocusAreaParams, FocusAreaData]):
    """The focus-area identifier for the training run (`training.model_spec.ModelSpec`)."""

    card = CARD
    params_type = FocusAreaParams
    direction = "maximize"

    def build(self, ctx: TrainingContext, frames: SourceFrames) -> FocusAreaData:
        return make_dataset(frames, ctx.as_of, self.params(ctx), ctx.seed)

    def holdout_size(self, data: FocusAreaData) -> HoldoutSize:
        """Labelled (student, topic) pairs at the hold-out origin."""
        return HoldoutSize(
            len(data.holdout),
            "labelled student-topic pairs",
            ("holdout_fraction", "label_window_days", "min_label_answers"),
        )

    def objective(self, ctx: TrainingContext, data: FocusAreaData) -> Callable[[Any], float]:
        """PR-AUC of the weak class, out of fold over the training students."""
        p = self.params(ctx)
        y = data.train[LABEL].to_numpy()

        def score(trial: Any) -> float:
            candidate = suggest(trial, p, ctx.seed)
            oof = out_of_fold(candidate, data.train, p.cv_folds, ctx.seed, pruning_reporter(trial))
            return binary_classification(y, oof)["pr_auc"]

        return score

    def evaluate(
        self, ctx: TrainingContext, data: FocusAreaData, predict: Predict
    ) -> tuple[dict[str, Any], str]:
        """A model's hold-out report next to the baselines, and its Markdown tables."""
        return evaluation.report_with_markdown(
            predict, data, self.params(ctx), ctx.seed, ctx.truth_dir
        )

    def slice_reports(
        self, ctx: TrainingContext, data: FocusAreaData, predict: Predict
    ) -> dict[str, dict[str, float]]:
        """Hold-out metrics per slice the promotion gate compares
        (`training.focus_area.evaluation.slice_metrics`)."""
        return evaluation.slice_metrics(data.holdout, predict, ctx.params)

    def behaviour_checks(
        self, ctx: TrainingContext, data: FocusAreaData, predict: Predict
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue
        (`training.focus_area.evaluation.behaviour_checks`)."""
        return evaluation.behaviour_checks(ctx.snapshot_dir, data, predict)

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
        p = self.params(ctx)
        estimator, threshold = refit(data.train, best_params, p, ctx.seed)
        model = FocusAreaPyfunc(estimator, threshold, p.target_accuracy)
        report, markdown = self.evaluate(ctx, data, lambda frame: model.predict(None, frame))
        holdout = data.holdout

        def plots(folder: Path) -> object:
            return evaluation.plots(folder, holdout, estimator, p)

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

    @property
    def monitoring(self) -> LiveMonitoring:
        return MONITORING


SPEC = FocusAreaSpec()
