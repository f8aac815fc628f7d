"""Focus-area identifier inputs: test statistics per student and topic up to a point in
time (accuracy overall and recent, difficulty-adjusted accuracy, time taken, recency,
incorrect-answer patterns, attempts), from `test_answers` only, so they are point-in-time
correct (`topic_performance` holds current totals and is not used here)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from features.frames import SourceFrames

TABLES = ("test_answers", "tests", "questions", "topics")
FEATURE_COLUMNS = (
    "attempts",
    "accuracy",
    "smoothed_accuracy",
    "accuracy_last_14d",
    "accuracy_last_30d",
    "attempts_last_30d",
    "accuracy_trend",
    "difficulty_adjusted_accuracy",
    "mean_difficulty",
    "seconds_per_mark",
    "slow_answer_share",
    "rushed_wrong_share",
    "repeated_wrong_option_share",
    "skip_share",
    "days_since_last_attempt",
    "mock_share",
    "syllabus_weight",
    "student_adjusted_accuracy",
    "relative_adjusted_accuracy",
    "student_shrunk_accuracy",
    "recency_weighted_accuracy",
    "adjusted_accuracy_last_30d",
    "accuracy_change_30d",
    "hard_question_accuracy",
    "answers_per_week",
)
# Expected share of right answers by the app's difficulty rating (1-5), used to judge
# results against the questions a student happened to get.
EXPECTED_BY_DIFFICULTY = {1: 0.85, 2: 0.77, 3: 0.69, 4: 0.60, 5: 0.50}
PRIOR_ANSWERS = 4  # pseudo-answers at the expected rate that shrink small samples
STUDENT_PRIOR_ANSWERS = 8  # pseudo-answers at the student's own level (all topics)
RECENCY_HALF_LIFE_DAYS = 21.0  # an answer's weight halves every 3 weeks (learning, forgetting)
HARD_DIFFICULTY = 4  # the app's ratings counted as the topic's hard questions


def answer_table(frames: SourceFrames) -> pd.DataFrame:
    """Answers joined with their question (topic, difficulty, marks) and test kind."""
    answers = frames["test_answers"]
    questions = frames["questions"][["id", "topic_id", "difficulty", "marks"]].rename(
        columns={"id": "question_id"}
    )
    tests = frames["tests"][["id", "kind"]].rename(columns={"id": "test_id"})
    joined = answers.merge(questions, on="question_id", how="inner").merge(
        tests, on="test_id", how="left"
    )
    joined["expected"] = joined["difficulty"].map(EXPECTED_BY_DIFFICULTY).astype(float)
    joined["correct"] = joined["is_correct"].astype(float)
    return joined


def answers_as_of(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """`answer_table` of the answers given up to `as_of`, with their age in days."""
    answers = answer_table(frames.as_of(as_of))
    answers["age_days"] = (pd.Timestamp(as_of) - answers["answered_at"]).dt.total_seconds() / 86400
    return answers


def topic_test_stats(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per (student, topic) the student has answered questions of, as of `as_of`."""
    answers = answers_as_of(frames, as_of)
    columns = ["user_id", "topic_id", *FEATURE_COLUMNS]
    if answers.empty:
        return pd.DataFrame(columns=columns)
    now = pd.Timestamp(as_of)
    answers["recent14"] = answers["age_days"] <= 14
    answers["recent30"] = answers["age_days"] <= 30
    answers["seconds_per_mark"] = answers["time_taken_seconds"] / answers["marks"].clip(lower=1)
    answers["wrong"] = 1.0 - answers["correct"]
    answers["skipped"] = answers["selected_option"].isna().astype(float)
    answers["mock"] = (answers["kind"] == "mock_paper").astype(float)
    # Time relative to the student's own pace, so slow topics stand out for everyone.
    pace = answers.groupby("user_id")["seconds_per_mark"].transform("median")
    answers["slow"] = (answers["seconds_per_mark"] > 1.5 * pace).astype(float)
    answers["rushed_wrong"] = (
        (answers["seconds_per_mark"] < 0.5 * pace) & (answers["wrong"] > 0)
    ).astype(float)

    keys = ["user_id", "topic_id"]
    grouped = answers.groupby(keys)
    stats = grouped.agg(
        attempts=("correct", "size"),
        correct=("correct", "sum"),
        expected=("expected", "sum"),
        mean_difficulty=("difficulty", "mean"),
        seconds_per_mark=("seconds_per_mark", "median"),
        slow_answer_share=("slow", "mean"),
        rushed_wrong_share=("rushed_wrong", "mean"),
        skip_share=("skipped", "mean"),
        mock_share=("mock", "mean"),
        last_answer=("answered_at", "max"),
    )
    # An app that does not time answers leaves the pace missing; the student's own pace
    # (else everyone's) stands in: no evidence of being slow. `slow` and `rushed_wrong`
    # are already 0 for an untimed answer (a comparison with NaN is False).
    # Only then: this builder is on serving's request path, and timed data pays nothing.
    if stats["seconds_per_mark"].isna().any():
        own_pace = answers.groupby("user_id")["seconds_per_mark"].median()
        stand_in = own_pace.reindex(stats.index.get_level_values("user_id")).to_numpy(float)
        stats["seconds_per_mark"] = (
            stats["seconds_per_mark"]
            .fillna(pd.Series(stand_in, index=stats.index))
            .fillna(answers["seconds_per_mark"].median())
            .fillna(0.0)
        )
    stats["accuracy"] = stats["correct"] / stats["attempts"]
    prior = stats["expected"] / stats["attempts"]
    stats["smoothed_accuracy"] = (stats["correct"] + PRIOR_ANSWERS * prior) / (
        stats["attempts"] + PRIOR_ANSWERS
    )
    stats["difficulty_adjusted_accuracy"] = (stats["correct"] - stats["expected"]) / stats[
        "attempts"
    ]
    for days, flag in ((14, "recent14"), (30, "recent30")):
        recent = answers[answers[flag]].groupby(keys)["correct"].agg(["sum", "size"])
        stats[f"accuracy_last_{days}d"] = (
            (recent["sum"] + PRIOR_ANSWERS * prior.reindex(recent.index))
            / (recent["size"] + PRIOR_ANSWERS)
        ).reindex(stats.index)
        if days == 30:
            stats["attempts_last_30d"] = recent["size"].reindex(stats.index).fillna(0)
    # Recent results where there are any, else the overall (smoothed) level.
    for days in (14, 30):
        column = f"accuracy_last_{days}d"
        stats[column] = stats[column].fillna(stats["smoothed_accuracy"])
    stats["accuracy_trend"] = stats["accuracy_last_30d"] - stats["smoothed_accuracy"]
    # A misconception shows as the same wrong option chosen again for the same question.
    wrong = answers[(answers["wrong"] > 0) & answers["selected_option"].notna()]
    if wrong.empty:
        stats["repeated_wrong_option_share"] = 0.0
    else:
        per_option = wrong.groupby([*keys, "question_id", "selected_option"]).size()
        repeated = (per_option[per_option > 1]).groupby(level=keys).sum()
        stats["repeated_wrong_option_share"] = (
            repeated.reindex(stats.index).fillna(0) / stats["attempts"]
        ).fillna(0.0)
    # Where the student stands now: answers weighted by recency (mastery grows with practice
    # and fades without it), difficulty-adjusted, shrunk toward the expected rate.
    answers["weight"] = np.power(0.5, answers["age_days"] / RECENCY_HALF_LIFE_DAYS)
    answers["weighted_correct"] = answers["weight"] * answers["correct"]
    weighted = answers.groupby(keys)[["weight", "weighted_correct"]].sum()
    stats["recency_weighted_accuracy"] = (weighted["weighted_correct"] + PRIOR_ANSWERS * prior) / (
        weighted["weight"] + PRIOR_ANSWERS
    )
    # The last 30 days against the 30 before, both difficulty-adjusted and shrunk to 0
    # (the trend over the last two windows).
    adjusted = {}
    for name, low, high in (("last", 0.0, 30.0), ("before", 30.0, 60.0)):
        rows = answers[(answers["age_days"] > low) | (low == 0.0)]
        rows = rows[rows["age_days"] <= high]
        window = rows.groupby(keys)[["correct", "expected"]].sum()
        count = rows.groupby(keys).size()
        adjusted[name] = (
            ((window["correct"] - window["expected"]) / (count + PRIOR_ANSWERS))
            .reindex(stats.index)
            .fillna(0.0)
        )
    stats["adjusted_accuracy_last_30d"] = adjusted["last"]
    stats["accuracy_change_30d"] = adjusted["last"] - adjusted["before"]
    # Results on the topic's hard questions (rated 4-5), shrunk toward their expected rate.
    hard = answers[answers["difficulty"] >= HARD_DIFFICULTY].groupby(keys)["correct"]
    hard_expected = EXPECTED_BY_DIFFICULTY[HARD_DIFFICULTY]
    stats["hard_question_accuracy"] = (
        ((hard.sum() + PRIOR_ANSWERS * hard_expected) / (hard.size() + PRIOR_ANSWERS))
        .reindex(stats.index)
        .fillna(hard_expected)
    )
    # Practice volume: answers per week since the first answer on the topic (a week at least).
    first = grouped["answered_at"].min()
    weeks = ((now - first).dt.total_seconds() / (7 * 86400)).clip(lower=1.0)
    stats["answers_per_week"] = stats["attempts"] / weeks
    stats["days_since_last_attempt"] = (now - stats["last_answer"]).dt.total_seconds() / 86400
    # The student's level over every topic: a topic is weak relative to the student's own
    # ability, and a topic with few answers is best guessed from that level.
    per_student = answers.groupby("user_id")[["correct", "expected"]].sum()
    answered = answers.groupby("user_id").size()
    level = (per_student["correct"] - per_student["expected"]) / answered
    student_level = level.reindex(stats.index.get_level_values("user_id")).to_numpy(dtype=float)
    stats["student_adjusted_accuracy"] = student_level
    stats["relative_adjusted_accuracy"] = stats["difficulty_adjusted_accuracy"] - student_level
    expected_rate = stats["expected"] / stats["attempts"]
    stats["student_shrunk_accuracy"] = (
        stats["correct"] + STUDENT_PRIOR_ANSWERS * (expected_rate + student_level).clip(0.0, 1.0)
    ) / (stats["attempts"] + STUDENT_PRIOR_ANSWERS)
    weights = frames["topics"].set_index("id")["syllabus_weight"]
    stats = stats.reset_index()
    stats["syllabus_weight"] = stats["topic_id"].map(weights).astype(float)
    stats["attempts"] = stats["attempts"].astype(float)
    result = stats[columns].sort_values(keys).reset_index(drop=True)
    result[list(FEATURE_COLUMNS)] = result[list(FEATURE_COLUMNS)].astype(float).round(10)
    return result


def feature_matrix(stats: pd.DataFrame) -> np.ndarray:
    """The model's input matrix from `topic_test_stats` rows."""
    return stats[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
