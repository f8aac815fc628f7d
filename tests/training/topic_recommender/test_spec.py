"""Topic recommender spec: it trains, evaluates and serves end to end."""

from __future__ import annotations

import pytest

from features.frames import SourceFrames
from features.recommend import CANDIDATE_COLUMNS
from tests.training.topic_recommender.conftest import one_student
from training.model_spec import Outcome, TrainingContext
from training.topic_recommender.data import RecommenderData
from training.topic_recommender.inference import OUTPUT_COLUMNS
from training.topic_recommender.spec import SPEC


def test_spec_trains_evaluates_and_serves_one_student(
    outcome: Outcome,
    context: TrainingContext,
    frames: SourceFrames,
    dataset: RecommenderData,
) -> None:
    report = outcome.report
    assert {
        "model",
        "baseline_popularity",
        "baseline_weakest_first",
        "baseline_content_only",
    } <= set(report)
    for metrics in (report["model"], report["baseline_popularity"]):
        assert 0.0 < metrics["ndcg_10"] <= 1.0
        assert 0.0 < metrics["coverage"] <= 1.0
    assert 0.0 <= report["model"]["ece"] <= 1.0
    assert "ndcg_10" in report["against_truth"]["model"]
    # The oracle ranks by the true gain: no method can rank these candidates better.
    truth = report["against_truth"]
    assert all(truth["oracle"]["ndcg_10"] >= m["ndcg_10"] for m in truth.values())
    gap = report["gap_closed"]["ndcg_10_against_truth"]
    assert gap["value"] <= 1.0 and gap["low"] < gap["high"]
    assert outcome.main_metric == "ndcg_10"
    again, markdown = SPEC.evaluate(
        context, dataset, lambda frame: outcome.python_model.predict(None, frame)
    )
    assert again["model"]["ndcg_10"] == pytest.approx(report["model"]["ndcg_10"])
    assert "baseline_popularity" in markdown

    rows = one_student(frames, dataset)
    ranked = outcome.python_model.predict(None, rows)
    assert list(ranked.columns) == OUTPUT_COLUMNS
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert set(ranked["topic_id"]) <= set(rows["topic_id"])
    assert ranked["confidence"].between(0, 1).all()
    assert ranked["reason"].str.len().gt(0).all()
    assert list(outcome.input_example.columns) == list(rows.columns)  # the builder's columns
    assert set(CANDIDATE_COLUMNS) <= set(outcome.input_example.columns)
