"""Topic recommender: which of a student's enrolled topics to work on next, ranked, with a
confidence per topic.

A hybrid of collaborative filtering and content-based scoring:
- collaborative: implicit-feedback ALS (the `implicit` library) over what students
  practised, weighted up where their results improved. Its item (topic) factors are fitted
  on the training students; a student's own factors are always folded in from their
  practice by least squares (the solve of implicit's `recalculate_user`), so a student
  unseen at training is scored exactly like one seen;
- content and context: the columns of `features.recommend.candidate_topics` (weak areas,
  interests, preferred difficulty, syllabus weight and position, past-paper frequency),
  and the student's own practice context derived from those rows (`practice_context`:
  where their quizzing has reached in each syllabus, their pace, recent focus);
- a two-stage gradient-boosted scorer over all of them (P(practised in the window) x
  P(improved | practised), `TwoStageScorer`), whose probability, calibrated by isotonic
  regression on out-of-fold predictions of the training students, is the confidence.

Label, from the source only: a topic is relevant for a student at origin t when the student
practises it in the following window (at least `min_window_answers` answers) AND their
accuracy over the window beats their earlier level on it by `min_improvement` (the earlier
level: their accuracy on the topic before t, shrunk toward their accuracy in the subject).
The generator's expected score gains are a second yardstick, never an input.
Mastered topics (many attempts, near-perfect overall and recent accuracy) are never
recommended. Baselines: popularity, weakest-topics-first, and a content-only scorer (topic
content and stated preferences); the report adds the hybrid's scorer without its
collaborative part as an ablation.

The training run's entry (`training.model_spec.ModelSpec`); each hook calls into the
package: the labelled candidates and split (`data`), what serving runs (`inference`), the
fitting and tuning (`estimator`), and the baselines, report and the promotion gate's
checks (`evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pandas as pd

from features.frames import SourceFrames
from training import tracking
from training.live import LiveMonitoring
from training.model_spec import HoldoutSize, ModelSpec, Outcome, TrainingContext
from training.topic_recommender import estimator, evaluation
from training.topic_recommender.data import (
    LABEL,
    RecommenderData,
    candidate_example,
    make_dataset,
)
from training.topic_recommender.inference import CARD, TopicRecommenderPyfunc
from training.topic_recommender.monitoring import MONITORING
from training.topic_recommender.params import TopicRecommenderParams

REQUIREMENTS = ["mlflow", "scikit-learn", "scipy", "pandas", "numpy", "cloudpickle"]


class TopicRecommenderSpec(ModelSpec[TopicRecommenderParams, RecommenderData]):
    """The topic recommender for the training run (`training.model_spec.ModelSpec`)."""

    card = CARD
    params_type = TopicRecommenderParams
    direction: ClassVar[Literal["minimize", "maximize"]] = "maximize"

    def build(self, ctx: TrainingContext, frames: SourceFrames) -> RecommenderData:
        return make_dataset(frames, ctx.as_of, self.params(ctx), ctx.seed)

    def holdout_size(self, data: RecommenderData) -> HoldoutSize:
        """Hold-out students with at least one relevant topic (NDCG is averaged over
        them)."""
        relevant = data.holdout.loc[data.holdout[LABEL] > 0, "user_id"]
        return HoldoutSize(
            int(relevant.nunique()),
            "students with a relevant topic",
            ("holdout_fraction", "label_window_days", "min_window_answers", "min_improvement"),
        )

    def objective(self, ctx: TrainingContext, data: RecommenderData) -> Callable[[Any], float]:
        """NDCG@k, out of fold over the training students (every training origin)."""
        return estimator.objective(data, self.params(ctx), ctx.seed)

    def evaluate(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """A model's hold-out report next to the baselines, and its Markdown tables."""
        p = self.params(ctx)
        truth = evaluation.holdout_truth(ctx.truth_dir, data, p)
        report, _ = evaluation.evaluate(predict, data, p, ctx.seed, truth)
        return report, evaluation.report_markdown(report, data, p)

    def registered_sections(self, report: dict[str, Any]) -> dict[str, str]:
        """The sections of a training run's report that score the registered version as
        `evaluate` does (`prepiq reproduce`): all but the ablation (another scorer, fitted
        without the collaborative part) and the cross-validation score."""
        return {k: k for k in report if k not in ("ablation_without_cf", "cv_ndcg")}

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """Hold-out ranking quality per slice the promotion gate compares: subject, tenure
        and recent activity (`evaluation.slice_reports`)."""
        return evaluation.slice_reports(data, predict, self.params(ctx), ctx.params)

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """A mastered topic never enters the top k, the same topic failing still does
        (`evaluation.behaviour_checks`)."""
        return evaluation.behaviour_checks(ctx.snapshot_dir, data, predict, self.params(ctx))

    def request_samples(self, data: RecommenderData, count: int) -> list[pd.DataFrame]:
        """Single-student requests as serving sends them (`evaluation.request_samples`)."""
        return evaluation.request_samples(data, count)

    def finish(
        self,
        ctx: TrainingContext,
        data: RecommenderData,
        best_params: dict[str, Any],
        cv_score: float,
    ) -> Outcome:
        """Refit the winner on every training student, calibrate its confidence on
        out-of-fold predictions, and evaluate it next to the baselines on the hold-out;
        also the same scorer without its collaborative part (an ablation, not a baseline)."""
        p = self.params(ctx)
        hp = estimator.chosen_hyperparameters(best_params, p)
        recommender, without_cf = estimator.refit(data, hp, p, ctx.seed)
        model = TopicRecommenderPyfunc(recommender)
        truth = evaluation.holdout_truth(ctx.truth_dir, data, p)
        report, markdown, plots = evaluation.refit_report(
            model, without_cf, data, p, ctx.seed, truth, cv_score
        )
        return Outcome(
            python_model=model,
            input_example=candidate_example(data.holdout),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=self.main_metric,
            main_label="hold-out NDCG@10",
            params={"holdout_origin": f"{data.holdout_origin:%Y-%m-%d}", **hp},
            plots=plots,
        )

    @property
    def monitoring(self) -> LiveMonitoring:
        return MONITORING


SPEC = TopicRecommenderSpec()
