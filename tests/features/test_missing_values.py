"""The feature builders on what real apps leave out (the contract allows both since
migration 0003): answers with no time, and questions written for the app, not taken
from a past paper."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import recommend
from features.focus import FEATURE_COLUMNS, answer_table, topic_test_stats
from features.frames import SourceFrames, from_snapshot
from features.store import TABLES
from tests.conftest import END_DATE

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


def _untimed(frames: SourceFrames, users: set[str], every: int) -> SourceFrames:
    """Every answer of `users`, and every `every`-th answer of the rest, without a time."""
    answers = frames["test_answers"].copy()
    blank = answers["user_id"].isin(users) | (np.arange(len(answers)) % every == 0)
    answers.loc[blank, "time_taken_seconds"] = np.nan
    return SourceFrames(frames.tables | {"test_answers": answers})


def test_focus_features_have_no_gaps_when_answers_are_untimed(frames: SourceFrames) -> None:
    student = str(frames["users"]["id"].iloc[0])
    timed = topic_test_stats(frames, AS_OF)
    untimed = topic_test_stats(_untimed(frames, {student}, every=3), AS_OF)

    assert len(untimed) == len(timed)
    assert not untimed[list(FEATURE_COLUMNS)].isna().any().any()
    mine = untimed[untimed["user_id"] == student]
    assert len(mine) > 0
    # No time at all: no evidence of being slow or of rushing, and the pace of everyone
    # else stands in for the student's own.
    assert (mine["slow_answer_share"] == 0).all()
    assert (mine["rushed_wrong_share"] == 0).all()
    others = answer_table(_untimed(frames, {student}, every=3))
    pace = (others["time_taken_seconds"] / others["marks"].clip(lower=1)).median()
    assert mine["seconds_per_mark"].to_numpy() == pytest.approx(pace)
    # The accuracy features do not depend on the times.
    kept = ["user_id", "topic_id", "accuracy", "smoothed_accuracy", "attempts"]
    pd.testing.assert_frame_equal(untimed[kept], timed[kept])


def test_no_time_anywhere_still_builds(frames: SourceFrames) -> None:
    users = set(frames["users"]["id"].astype(str))
    untimed = topic_test_stats(_untimed(frames, users, every=1), AS_OF)
    assert not untimed[list(FEATURE_COLUMNS)].isna().any().any()
    assert (untimed["seconds_per_mark"] == 0).all()


def test_questions_without_a_paper_are_kept_and_counted_for_no_paper(
    frames: SourceFrames,
) -> None:
    questions = frames["questions"].copy()
    topic = int(questions["topic_id"].iloc[0])
    on_topic = questions["topic_id"] == topic
    before = recommend.topic_content(frames, AS_OF).set_index("topic_id")
    # The topic's questions become the app's own: no paper asked the topic any more.
    questions.loc[on_topic, ["paper_id", "question_number"]] = np.nan
    paperless = SourceFrames(frames.tables | {"questions": questions})

    cut = paperless.as_of(AS_OF)
    assert set(questions.loc[on_topic, "id"]) <= set(cut["questions"]["id"])
    # Their answers still count for the student's results on the topic.
    answered = answer_table(paperless)
    assert (answered["topic_id"] == topic).sum() == (
        answer_table(frames)["topic_id"] == topic
    ).sum()

    content = recommend.topic_content(paperless, AS_OF).set_index("topic_id")
    was, now = (c["paper_frequency"].astype(float).to_dict() for c in (before, content))
    assert was[topic] > 0
    assert now[topic] == 0.0
    others = content.index != topic
    pd.testing.assert_series_equal(
        content.loc[others, "paper_frequency"], before.loc[others, "paper_frequency"]
    )
