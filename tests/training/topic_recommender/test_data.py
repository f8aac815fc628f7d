"""Topic recommender data: labels are later practice that improved results in the source,
the hold-out is other students at a later time, and nothing reads rows after its origin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.focus import answer_table
from features.frames import SourceFrames
from features.recommend import CANDIDATE_COLUMNS, candidate_topics
from tests.training.topic_recommender.conftest import AS_OF
from training.model_spec import Outcome
from training.topic_recommender.data import LABEL, RecommenderData
from training.topic_recommender.params import TopicRecommenderParams
from training.topic_recommender.spec import SPEC


def test_labels_are_later_practice_that_improved(
    frames: SourceFrames, dataset: RecommenderData, params: TopicRecommenderParams
) -> None:
    p = params
    holdout = dataset.holdout
    answers = answer_table(frames)
    origin = holdout["origin"].iloc[0]
    for label in (1, 0):
        row = holdout[(holdout[LABEL] == label) & (holdout["practised"] > 0)].iloc[0]
        mine = answers[answers["user_id"] == row["user_id"]]
        topic = mine[mine["topic_id"] == row["topic_id"]]
        before = topic[topic["answered_at"] <= origin]
        subject_topics = frames["topics"].loc[
            frames["topics"]["subject_id"] == row["subject_id"], "id"
        ]
        subject = mine[(mine["answered_at"] <= origin) & mine["topic_id"].isin(subject_topics)]
        level = (before["correct"].sum() + p.prior_answers * subject["correct"].mean()) / (
            len(before) + p.prior_answers
        )
        window = topic[
            (topic["answered_at"] > origin)
            & (topic["answered_at"] <= origin + pd.Timedelta(days=p.label_window_days))
        ]
        improved = len(window) >= p.min_window_answers and (
            window["correct"].mean() - level >= p.min_improvement
        )
        assert row["earlier_level"] == pytest.approx(level)
        assert int(improved) == label
    assert 0.02 < dataset.train[LABEL].mean() < 0.4  # a minority, but not a rare one


def test_holdout_is_other_students_at_a_later_time(
    dataset: RecommenderData, params: TopicRecommenderParams
) -> None:
    p = params
    held_out = set(dataset.holdout["user_id"])
    assert set(dataset.train["user_id"]).isdisjoint(held_out)
    assert set(dataset.reference["user_id"]).isdisjoint(held_out)  # nor does the CF part
    latest_window_end = dataset.train["origin"].max() + pd.Timedelta(days=p.label_window_days)
    assert latest_window_end <= dataset.holdout["origin"].min()
    assert dataset.train["origin"].nunique() >= 2
    assert dataset.holdout["user_id"].nunique() > 30


def test_candidates_read_no_rows_after_their_origin(frames: SourceFrames) -> None:
    origin = AS_OF - timedelta(days=40)
    answers = frames["test_answers"]
    student = str(answers["user_id"].value_counts().index[0])
    row = answers[answers["user_id"] == student].iloc[[0]]
    future = pd.concat([row] * 30, ignore_index=True)
    future["id"] = range(20_000_000, 20_000_030)
    future["is_correct"] = False
    future["answered_at"] = pd.Timestamp(origin + timedelta(hours=1))
    planted = SourceFrames(
        dict(frames.tables) | {"test_answers": pd.concat([answers, future], ignore_index=True)}
    )
    pd.testing.assert_frame_equal(
        candidate_topics(frames, origin), candidate_topics(planted, origin)
    )
    later = origin + timedelta(days=1)
    assert not candidate_topics(frames, later).equals(candidate_topics(planted, later))


def test_a_student_who_never_answered_gets_unpractised_candidates(frames: SourceFrames) -> None:
    """The new-student case: no answers at all. (An empty interactions frame used to hold
    objects, and pandas' 0 / 0 on them raised ZeroDivisionError.)"""
    answers = frames["test_answers"]
    student = str(answers["user_id"].iloc[0])
    unanswered = SourceFrames(
        dict(frames.tables) | {"test_answers": answers[answers["user_id"] != student]}
    )
    alone = SourceFrames(dict(frames.tables) | {"test_answers": answers.iloc[0:0]})
    for source in (unanswered, alone):
        candidates = candidate_topics(source, AS_OF)
        mine = candidates[candidates["user_id"] == student]
        assert len(mine) > 0
        assert (mine["practised"] == 0).all() and (mine["attempts"] == 0).all()
        assert mine["accuracy"].isna().all() and mine["subject_accuracy"].isna().all()
        assert all(dtype == np.float64 for dtype in candidates[list(CANDIDATE_COLUMNS)].dtypes)


def test_holdout_size_is_what_the_evaluation_scores(
    dataset: RecommenderData, outcome: Outcome
) -> None:
    """The students `min_holdout` counts are the ones NDCG is averaged over."""
    assert SPEC.holdout_size(dataset).count == outcome.report["model"]["groups"] > 0
