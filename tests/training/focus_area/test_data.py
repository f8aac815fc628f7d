"""Focus-area training data: labels come from later test results in the source, and the
hold-out is split from training by student and by time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from features.focus import answer_table, topic_test_stats
from features.frames import SourceFrames, from_snapshot
from features.store import TABLES
from tests.conftest import END_DATE
from training.focus_area.data import (
    LABEL,
    FocusAreaData,
    later_results,
    make_dataset,
    question_rates,
    with_answers_on_topic,
)
from training.focus_area.params import FocusAreaParams
from training.focus_area.spec import SPEC
from training.splits import group_folds, holdout_students

PARAMS = FocusAreaParams.from_params(load_params(PROJECT_ROOT / "params.yaml")).replaced(
    label_window_days=30, min_label_answers=3, holdout_fraction=0.3
)


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="module")
def dataset(frames: SourceFrames) -> FocusAreaData:
    as_of = pd.Timestamp(END_DATE).tz_localize("UTC").to_pydatetime() + timedelta(hours=23)
    return make_dataset(frames, as_of, PARAMS, seed=42)


def test_labels_are_later_results_below_the_threshold(
    frames: SourceFrames, dataset: FocusAreaData
) -> None:
    row = dataset.holdout.iloc[0]
    answers = answer_table(frames)
    window = answers[
        (answers["user_id"] == row["user_id"])
        & (answers["topic_id"] == row["topic_id"])
        & (answers["answered_at"] > row["origin"])
        & (answers["answered_at"] <= row["origin"] + pd.Timedelta(days=PARAMS.label_window_days))
    ]
    assert len(window) >= PARAMS.min_label_answers
    assert row[LABEL] == int(window["correct"].mean() < PARAMS.weak_threshold)
    assert 0.05 < dataset.train[LABEL].mean() < 0.6  # both classes are well represented


def test_an_adjusted_label_judges_later_results_against_the_questions_answered(
    frames: SourceFrames, dataset: FocusAreaData
) -> None:
    """`label_basis: adjusted`: the mean of (right - the question's expected rate) over the
    window plus the topic's mean expected rate, the rates from answers up to the origin
    only (rewriting every later answer changes no rate)."""
    adjusted = PARAMS.replaced(label_basis="adjusted")
    origin = dataset.holdout_origin
    answers = answer_table(frames)
    results = later_results(frames, answers, origin, adjusted)
    assert len(results) > 20
    row = results.iloc[0]
    questions = frames["questions"]
    rates = question_rates(questions, answers[answers["answered_at"] <= pd.Timestamp(origin)])
    assert rates.between(0.0, 1.0).all() and len(rates) == len(questions)
    window = answers[
        (answers["user_id"] == row["user_id"])
        & (answers["topic_id"] == row["topic_id"])
        & (answers["answered_at"] > pd.Timestamp(origin))
        & (answers["answered_at"] <= pd.Timestamp(origin) + pd.Timedelta(days=30))
    ]
    on_topic = questions.loc[questions["topic_id"] == row["topic_id"], "id"]
    expected = (window["correct"] - window["question_id"].map(rates)).mean() + rates[
        on_topic
    ].mean()
    assert row["later_answers"] == len(window)
    assert row["later_accuracy"] == pytest.approx(expected)
    future = answers["answered_at"] > pd.Timestamp(origin)
    rewritten = answers.assign(
        correct=np.where(future, 1.0 - answers["correct"], answers["correct"])
    )
    again = later_results(frames, answers, origin, adjusted, known=rewritten)
    pd.testing.assert_frame_equal(results, again)
    labelled = make_dataset(frames, origin + timedelta(days=30), adjusted, seed=42)
    assert labelled.holdout_origin == origin
    assert 0.05 < labelled.train[LABEL].mean() < 0.6
    held = labelled.holdout.merge(results, on=["user_id", "topic_id"])
    assert len(held) == len(labelled.holdout)
    np.testing.assert_allclose(held["later_accuracy_x"], held["later_accuracy_y"])
    with pytest.raises(ConfigError, match="label_basis"):
        PARAMS.replaced(label_basis="truth")


def test_holdout_is_other_students_at_a_later_time(dataset: FocusAreaData) -> None:
    assert set(dataset.train["user_id"]).isdisjoint(set(dataset.holdout["user_id"]))
    latest_train_window_end = dataset.train["origin"].max() + pd.Timedelta(
        days=PARAMS.label_window_days
    )
    assert latest_train_window_end <= dataset.holdout["origin"].min()
    assert len(dataset.holdout) > 20


def test_holdout_students_are_stable_across_snapshots() -> None:
    ids = [f"user-{i}" for i in range(2000)]
    first = holdout_students(ids, 0.2, seed=1)
    assert first == holdout_students([*ids, "newcomer"], 0.2, seed=1) - {"newcomer"}
    assert 300 < len(first) < 500
    assert first != holdout_students(ids, 0.2, seed=2)


def test_folds_keep_each_student_in_one_fold() -> None:
    groups = np.repeat(np.arange(50), 4)
    folds = group_folds(groups, 3, seed=0)
    for fit_rows, score_rows in folds:
        assert set(groups[fit_rows]).isdisjoint(groups[score_rows])
    assert sorted(np.concatenate([s for _, s in folds]).tolist()) == list(range(200))


HISTORY_FEATURES = [
    "recency_weighted_accuracy",
    "adjusted_accuracy_last_30d",
    "accuracy_change_30d",
    "hard_question_accuracy",
    "answers_per_week",
]


def test_history_features_read_no_row_after_the_origin(frames: SourceFrames) -> None:
    """The trend, recency-weighted, hard-question and volume features at an origin are
    the same whatever happens after it (here: every later answer of the busiest student
    rewritten wrong and on a hard question), and they move once time passes the rows."""
    as_of = pd.Timestamp(END_DATE).tz_localize("UTC").to_pydatetime() - timedelta(days=30)
    answers = frames["test_answers"]
    student = str(answers["user_id"].value_counts().index[0])
    future = (answers["user_id"] == student) & (answers["answered_at"] > pd.Timestamp(as_of))
    assert future.sum() > 0
    edited = answers.copy()
    edited.loc[future, "is_correct"] = False
    planted = SourceFrames(frames.tables | {"test_answers": edited})
    before = topic_test_stats(frames.for_users([student]), as_of)
    after = topic_test_stats(planted.for_users([student]), as_of)
    pd.testing.assert_frame_equal(before[HISTORY_FEATURES], after[HISTORY_FEATURES])
    later = as_of + timedelta(days=29)
    moved = topic_test_stats(planted.for_users([student]), later)[HISTORY_FEATURES]
    assert not moved.equals(topic_test_stats(frames.for_users([student]), later)[HISTORY_FEATURES])


def test_history_features_follow_the_students_answers(frames: SourceFrames) -> None:
    """All answers on a topic wrong give a lower recency-weighted, recent-adjusted and
    hard-question accuracy than all right; the volume is answers per week (a week at least)."""
    as_of = pd.Timestamp(END_DATE).tz_localize("UTC").to_pydatetime()
    stats = topic_test_stats(frames, as_of)
    busy = stats[(stats["attempts"] >= 10) & (stats["attempts_last_30d"] >= 3)].iloc[0]
    user, topic = busy["user_id"], int(busy["topic_id"])
    mine = frames.for_users([user])
    rows = {
        correct: topic_test_stats(with_answers_on_topic(mine, user, topic, correct), as_of)
        .set_index("topic_id")
        .loc[topic]
        for correct in (False, True)
    }
    for column in ("recency_weighted_accuracy", "adjusted_accuracy_last_30d"):
        assert rows[False][column] < rows[True][column], column
    assert rows[False]["hard_question_accuracy"] <= rows[True]["hard_question_accuracy"]
    assert 0 < rows[True]["recency_weighted_accuracy"] < 1
    assert 0 < busy["answers_per_week"] <= busy["attempts"]
    assert stats[HISTORY_FEATURES].notna().all().all()


def test_holdout_size_counts_the_labelled_pairs(dataset: FocusAreaData) -> None:
    size = SPEC.holdout_size(dataset)
    assert size.count == len(dataset.holdout.drop_duplicates(["user_id", "topic_id"]))
    assert size.unit == "labelled student-topic pairs"
