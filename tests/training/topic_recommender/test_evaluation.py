"""Topic recommender evaluation: the ranking metrics by hand, and the promotion gate's
methods (slices, behavioural checks with their probe, request samples) on the trained
model."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from core.exceptions import HoldoutError
from features.frames import SourceFrames
from features.recommend import candidate_topics
from tests.training.topic_recommender.conftest import Predict, served
from training.metrics import ranking_metrics
from training.model_spec import Outcome, TrainingContext
from training.topic_recommender.data import RecommenderData
from training.topic_recommender.evaluation import with_practice_on_topic
from training.topic_recommender.inference import MasteryRule
from training.topic_recommender.params import TopicRecommenderParams
from training.topic_recommender.spec import SPEC


def test_ranking_metrics_by_hand() -> None:
    groups = np.array(["a", "a", "a", "b", "b"])
    relevance = np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # b has nothing relevant: not averaged
    perfect = ranking_metrics(groups, np.array([3.0, 2.0, 1.0, 1.0, 0.0]), relevance, 2)
    assert perfect["ndcg_2"] == pytest.approx(1.0)
    assert perfect["groups"] == 1.0
    second = ranking_metrics(groups, np.array([2.0, 3.0, 1.0, 1.0, 0.0]), relevance, 2)
    assert second["ndcg_2"] == pytest.approx(1 / np.log2(3))
    left_out = ranking_metrics(groups, np.array([-np.inf, 3.0, 2.0, 1.0, 0.0]), relevance, 3)
    assert left_out["recall_3"] == 0.0  # an item scored -inf is never recommended


# -- the promotion gate's methods ---------------------------------------------------------


def test_slices_cover_subject_tenure_and_activity(
    outcome: Outcome, context: TrainingContext, dataset: RecommenderData
) -> None:
    """Every slice reports NDCG@10 over its students; the student slices split the
    hold-out's scored students, each subject slice ranks that subject's topics only."""
    holdout = dataset.holdout
    slices = SPEC.slice_reports(context, dataset, served(outcome))
    subjects = [name for name in slices if name.startswith("subject ")]
    assert len(subjects) == holdout["subject_id"].nunique() > 1
    assert sum(slices[s]["candidates"] for s in subjects) == len(holdout)
    for metrics in slices.values():
        assert 0.0 <= metrics["ndcg_10"] <= 1.0
        assert 0 < metrics["n"] <= metrics["candidates"]
    scored = outcome.report["model"]["groups"]  # hold-out students with a relevant topic
    for pair in (
        ("new students", "long-standing students"),
        ("low recent activity", "high recent activity"),
    ):
        assert set(pair) <= set(slices)
        assert slices[pair[0]]["n"] + slices[pair[1]]["n"] == scored
        assert slices[pair[0]]["candidates"] + slices[pair[1]]["candidates"] == len(holdout)
        # The overall NDCG is the students' mean: the two halves' means weighted by n.
        mean = sum(slices[s]["ndcg_10"] * slices[s]["n"] for s in pair) / scored
        assert mean == pytest.approx(outcome.report["model"]["ndcg_10"])
    assert sum(slices[s]["n"] for s in subjects) >= scored  # a student in several subjects
    stale = copy.copy(dataset)
    stale.holdout = holdout.drop(columns=["days_since_joined"])
    with pytest.raises(HoldoutError, match="re-freeze"):
        SPEC.slice_reports(context, stale, served(outcome))


def reversed_results(predict: Predict) -> Predict:
    """A broken model: it reads every accuracy the wrong way round."""

    def broken(frame: pd.DataFrame) -> pd.DataFrame:
        flipped = frame.copy()
        for column in ("accuracy", "accuracy_last_30d", "subject_accuracy"):
            flipped[column] = 1.0 - flipped[column]
        return predict(flipped)

    return broken


def test_behaviour_checks_pass_on_the_model_and_fail_on_broken_ones(
    outcome: Outcome, context: TrainingContext, dataset: RecommenderData
) -> None:
    predict = served(outcome)
    checks = SPEC.behaviour_checks(context, dataset, predict)
    assert len(checks) == 2
    assert all(ok for ok, _ in checks.values()), checks
    assert all("5/5" in why for _, why in checks.values())
    broken = SPEC.behaviour_checks(context, dataset, reversed_results(predict))
    assert not all(ok for ok, _ in broken.values()), broken

    def recommends_nothing(frame: pd.DataFrame) -> pd.DataFrame:
        return predict(frame).head(0)

    nothing = SPEC.behaviour_checks(context, dataset, recommends_nothing)
    assert not all(ok for ok, _ in nothing.values()), nothing


def test_probe_edits_answers_into_a_mastered_topic(
    frames: SourceFrames, dataset: RecommenderData, params: TopicRecommenderParams
) -> None:
    """The probe's edited answers make the builder's row mastered (or failing)."""
    p = params
    origin = dataset.holdout_origin
    row = dataset.holdout[dataset.holdout["practised"] > 0].iloc[0]
    user, topic = str(row["user_id"]), int(row["topic_id"])
    mine = frames.for_users([user])
    for correct in (True, False):
        edited = with_practice_on_topic(mine, user, topic, origin, correct, 20)
        rows = candidate_topics(edited, origin)
        at = rows[rows["topic_id"] == topic]
        assert at["attempts"].iloc[0] == row["attempts"] + 20
        assert at["accuracy_last_30d"].iloc[0] == float(correct)
        assert MasteryRule(p.mastery_min_attempts, p.mastery_accuracy).applies(at)[0] == correct
        others = rows[rows["topic_id"] != topic].reset_index(drop=True)
        before = candidate_topics(mine, origin)
        before = before[before["topic_id"] != topic].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            others.drop(columns=["subject_attempts", "subject_accuracy", "relative_accuracy"]),
            before.drop(columns=["subject_attempts", "subject_accuracy", "relative_accuracy"]),
        )


def test_request_samples_are_single_students_the_model_ranks(
    outcome: Outcome, dataset: RecommenderData
) -> None:
    samples = SPEC.request_samples(dataset, 4)
    assert len(samples) == 4
    for sample in samples:
        assert sample["user_id"].nunique() == 1
        assert list(sample.columns) == list(outcome.input_example.columns)
        ranked = outcome.python_model.predict(None, sample)
        assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
        assert len(ranked) > 0
