"""Question-importance ranker: rank a subject's candidate questions for its next paper.

Candidates are the distinct question texts of a subject's past papers up to a cut-off
year t (`features.questions.question_history`). Labels come from the source itself, the
paper of year t+1 (papers are cut with `SourceFrames.as_of` on their exam date):

- grade 2: the same question (same normalised text) is set again in year t+1;
- grade 1: it is not, but its topic comes up in year t+1;
- grade 0: neither.

NDCG uses the gains 2^grade - 1 (0, 1, 3). Two heads of one family (gradient boosting or
logistic regression, chosen by Optuna) estimate P(topic comes up) and P(question comes
back) from the history features and the text features: MiniLM embeddings (reduced by PCA
inside the scorer), and MiniLM and TF-IDF similarities to the subject's and the topic's
recent questions. A question comes back only a few dozen times a year, so the learned
P(question) is blended with the history's structured estimate (`expected_repeat`: the
topic's forecast questions times the question's share of them) by a tuned weight.
Candidates are ranked by the expected gain P(topic) + 2 P(question); each probability is
then calibrated (Platt scaling fitted on out-of-time predictions).

Splits are by time only: past papers are catalogue data, the same for every student, so
there are no students to hold out. Hold-out is rolling: each of the last `holdout_years`
years is ranked by a model fitted only on earlier cut-offs (whose next papers were sat by
then). Tuning validates time-ordered too: each of the last `cv_folds` cut-offs before the
first test year is ranked by a model fitted on the cut-offs before it. The logged model
is fitted like the last test year's (without the labels of the last paper in the source,
which stays its hold-out for `evaluate` and the promotion gate) and ranks from every paper.
The generator's held-back next paper (`next_papers.parquet`) is a second yardstick, never
an input.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from optuna.trial import FixedTrial

from features.frames import SourceFrames
from features.questions import CANDIDATE_COLUMNS
from features.text import ENCODER_NAME, load_encoder
from training import tracking
from training.live import LiveMonitoring
from training.model_spec import HoldoutSize, ModelSpec, Outcome, Predict, TrainingContext
from training.question_ranker import estimator, evaluation
from training.question_ranker.data import RankerData, make_dataset
from training.question_ranker.inference import CARD, REQUIREMENTS, QuestionRankerPyfunc
from training.question_ranker.monitoring import MONITORING
from training.question_ranker.params import QuestionRankerParams


class QuestionRankerSpec(ModelSpec[QuestionRankerParams, RankerData]):
    """The question-importance ranker for the training run (`training.model_spec`)."""

    card = CARD
    params_type = QuestionRankerParams
    direction: ClassVar[Literal["minimize", "maximize"]] = "maximize"

    def build(self, ctx: TrainingContext, frames: SourceFrames) -> RankerData:
        return make_dataset(frames, ctx.as_of, self.params(ctx), load_encoder())

    def holdout_size(self, data: RankerData) -> HoldoutSize:
        """Ranked lists (one per hold-out year and subject with a paper that year)."""
        tests = [c for c in data.cutoffs if c.year in set(data.test_years)]
        lists = sum(int(c.candidates["subject_id"].nunique()) for c in tests)
        return HoldoutSize(lists, "ranked lists (year, subject)", ("holdout_years",))

    def objective(self, ctx: TrainingContext, data: RankerData) -> Callable[[Any], float]:
        """Mean NDCG@k over the validation cut-offs (`estimator.objective`)."""
        return estimator.objective(data, self.params(ctx), ctx.seed)

    def evaluate(
        self, ctx: TrainingContext, data: RankerData, predict: Predict
    ) -> tuple[dict[str, Any], str]:
        """One model next to the baselines on the latest paper in the source, and against
        the generator's held-back next paper (`evaluation.evaluate_version`)."""
        return evaluation.evaluate_version(data, ctx.truth_dir, predict, self.params(ctx).top_k)

    def registered_sections(self, report: dict[str, Any]) -> dict[str, str]:
        """Where a training run's report scores the registered version as `evaluate` does
        (`prepiq reproduce`): the rolling hold-out's last year, whose ranker is fitted on
        the same cut-offs as the logged one (`finish`), and the score against the truth.
        The earlier years and the pooled figures (`model`, `baseline_*`) are rankers
        refitted per year, which no registered version holds."""
        last = max(report.get("holdout_by_year", {}), key=int, default=None)
        sections = {"against_truth": "against_truth"} if "against_truth" in report else {}
        if last is None:
            return sections
        return {
            name: f"holdout_by_year.{last}.{name}" for name in report["holdout_by_year"][last]
        } | sections

    def slice_reports(
        self, ctx: TrainingContext, data: RankerData, predict: Predict
    ) -> dict[str, dict[str, float]]:
        """`ranking_report` of the model per subject on the rows `evaluate` scores
        (`training.question_ranker.evaluation.subject_slices`, which says why there are no
        student or per-year slices)."""
        return evaluation.subject_slices(data, predict, self.params(ctx).top_k)

    def behaviour_checks(
        self, ctx: TrainingContext, data: RankerData, predict: Predict
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue: a question repeated every year ranks
        above one never asked (`training.question_ranker.evaluation.repeated_above_never_asked`)."""
        return evaluation.repeated_above_never_asked(ctx.snapshot_dir, ctx.as_of, data, predict)

    def request_samples(self, data: RankerData, count: int) -> list[pd.DataFrame]:
        """Single-subject requests as serving sends them, `count` of them cycling over the
        subjects of the latest history (`training.question_ranker.evaluation.request_samples`)."""
        return evaluation.request_samples(data, count)

    def finish(
        self, ctx: TrainingContext, data: RankerData, best_params: dict[str, Any], cv_score: float
    ) -> Outcome:
        """Rolling hold-out of the winner next to the baselines (refitted per test year),
        then the logged ranker: fitted on every cut-off, with every paper as history (also
        scored against the generator's next paper when it is at hand)."""
        p = self.params(ctx)
        k = p.top_k
        config = estimator.suggest(FixedTrial(best_params), p, ctx.seed)
        result, report, years = evaluation.rolling_holdout_report(data, config, p, ctx.seed)
        # Fitted without the last paper's labels, so that paper stays a hold-out for this
        # version (`evaluate`, the promotion gate); it still ranks from every paper.
        ranker = estimator.fit_ranker(
            data, config, data.before(years[-1] - 1), p.cv_folds, ctx.seed
        )
        model = QuestionRankerPyfunc(
            ranker, data.latest.questions, config.recent_years, data.embeddings
        )
        truth = evaluation.against_truth(data, ctx.truth_dir, partial(model.predict, None), k)
        if truth is not None:
            report["against_truth"] = truth
        title = f"{CARD.name}: rolling hold-out, the papers of {', '.join(map(str, years))}"
        markdown = evaluation.markdown_tables(title, report, k)

        def plots(folder: Path) -> object:
            return evaluation.holdout_plots(folder, result, report["holdout_by_year"], k)

        return Outcome(
            python_model=model,
            input_example=data.latest.candidates[list(CANDIDATE_COLUMNS)].head(5),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=f"ndcg_{k}",  # `main_metric` at the default top_k
            main_label=f"rolling hold-out NDCG@{k}",
            params={
                "test_years": ",".join(map(str, years)),
                "encoder": ENCODER_NAME,
                "recent_years": config.recent_years,
            },
            plots=plots,
        )

    @property
    def monitoring(self) -> LiveMonitoring:
        """Nothing per student to watch: the inputs are the past-paper catalogue."""
        return MONITORING


SPEC = QuestionRankerSpec()
