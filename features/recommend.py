"""Topic recommender inputs as of a point in time:

- interactions: a student-by-topic table of practice and results (attempts, accuracy,
  recent practice, gain between earlier and recent results), from `test_answers`;
- topic content: per topic, its subject, syllabus weight and position, the difficulty of
  its questions, how often past papers ask it, and how students rate its questions;
- student context: enrolled subjects, stated interests and preferred difficulty;
- candidate topics: the three joined, one row per (student, enrolled topic), with where the
  topic stands against the student's results and syllabus progress in its subject. Training
  and serving both rank these rows.
"""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from features.focus import PRIOR_ANSWERS, answers_as_of
from features.frames import SourceFrames

TABLES = (
    "test_answers",
    "tests",
    "questions",
    "topics",
    "past_papers",
    "question_ratings",
    "user_subjects",
    "user_preferences",
)
INTERACTION_COLUMNS = (
    "attempts",
    "accuracy",
    "attempts_last_30d",
    "accuracy_last_30d",
    "accuracy_gain",
    "days_since_last_attempt",
)
PREFERRED_LEVEL = {"easy": 2.0, "medium": 3.0, "hard": 4.0}  # on the 1-5 difficulty scale
CONTENT_COLUMNS = (
    "subject_id",
    "syllabus_weight",
    "position",
    "mean_difficulty",
    "paper_frequency",
    "mean_rating",
)


def interactions(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per (student, topic) practised: how much, how well, and how it changed."""
    answers = answers_as_of(frames, as_of)
    columns = ["user_id", "topic_id", *INTERACTION_COLUMNS]
    if answers.empty:
        return typed_interactions(pd.DataFrame(columns=columns))
    now = pd.Timestamp(as_of)
    answers["recent"] = answers["age_days"] <= 30
    keys = ["user_id", "topic_id"]
    overall = answers.groupby(keys).agg(
        attempts=("correct", "size"), correct=("correct", "sum"), last=("answered_at", "max")
    )
    recent = answers[answers["recent"]].groupby(keys)["correct"].agg(["sum", "size"])
    earlier = answers[~answers["recent"]].groupby(keys)["correct"].agg(["sum", "size"])
    base = 0.5  # shrink both halves toward a neutral level so one answer is not a trend
    recent_rate = (recent["sum"] + PRIOR_ANSWERS * base) / (recent["size"] + PRIOR_ANSWERS)
    earlier_rate = (earlier["sum"] + PRIOR_ANSWERS * base) / (earlier["size"] + PRIOR_ANSWERS)
    overall["accuracy"] = overall["correct"] / overall["attempts"]
    overall["attempts_last_30d"] = recent["size"].reindex(overall.index).fillna(0)
    # Raw recent share of right answers (NaN without recent answers): what mastery means now.
    overall["accuracy_last_30d"] = (recent["sum"] / recent["size"]).reindex(overall.index)
    overall["accuracy_gain"] = (recent_rate - earlier_rate).reindex(overall.index).fillna(0.0)
    overall["days_since_last_attempt"] = (now - overall["last"]).dt.total_seconds() / 86400
    overall["attempts"] = overall["attempts"].astype(float)
    result = overall.reset_index()[columns].sort_values(keys).reset_index(drop=True)
    result[list(INTERACTION_COLUMNS)] = result[list(INTERACTION_COLUMNS)].astype(float).round(10)
    return result


def typed_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (interaction rows) with the numeric dtypes `interactions` gives. An empty
    frame built from column names alone holds objects, and pandas then does its
    arithmetic in Python: 0 / 0 raised ZeroDivisionError for a student with no practice,
    where float columns give the NaN `assemble_candidates` expects."""
    return frame.astype({"topic_id": "int64", **dict.fromkeys(INTERACTION_COLUMNS, "float64")})


def topic_content(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per topic: what it is and how exams and students treat it."""
    frames = frames.as_of(as_of)
    topics = frames["topics"][["id", "subject_id", "syllabus_weight", "position"]].rename(
        columns={"id": "topic_id"}
    )
    questions = frames["questions"]
    papers = frames["past_papers"]
    per_topic = questions.groupby("topic_id").agg(mean_difficulty=("difficulty", "mean"))
    # Share of a subject's papers that asked the topic at least once (questions not from
    # a paper count for none).
    asked = (
        questions[["topic_id", "paper_id"]].dropna().drop_duplicates().groupby("topic_id").size()
    )
    papers_per_subject = papers.groupby("subject_id").size()
    ratings = frames["question_ratings"].merge(
        questions[["id", "topic_id"]].rename(columns={"id": "question_id"}), on="question_id"
    )
    mean_rating = ratings.groupby("topic_id")["difficulty_rating"].mean()
    content = topics.set_index("topic_id").join(per_topic)
    content["paper_frequency"] = (asked / content["subject_id"].map(papers_per_subject)).reindex(
        content.index
    )
    content["mean_rating"] = mean_rating.reindex(content.index)
    content = content.fillna({"mean_difficulty": 3.0, "paper_frequency": 0.0, "mean_rating": 3.0})
    return (
        content.reset_index()[["topic_id", *CONTENT_COLUMNS]]
        .sort_values("topic_id")
        .reset_index(drop=True)
    )


def student_context(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per (student, enrolled topic): whether the student marked it as interesting,
    and the student's preferred difficulty."""
    frames = frames.as_of(as_of)
    preferences = frames["user_preferences"]
    interested = {
        (user, int(topic))
        for user, raw in zip(
            preferences["user_id"], preferences["interested_topic_ids"], strict=True
        )
        for topic in json.loads(raw or "[]")
    }
    difficulty = preferences.set_index("user_id")["preferred_difficulty"]
    return context_rows(
        frames["user_subjects"][["user_id", "subject_id"]], frames["topics"], interested, difficulty
    )


def context_rows(
    enrolments: pd.DataFrame,
    topics: pd.DataFrame,
    interested: set[tuple[str, int]],
    difficulty: pd.Series,
) -> pd.DataFrame:
    """`student_context` rows from its parts: enrolments (user_id, subject_id), the topics
    table, the (student, topic) pairs marked interesting and each student's preferred
    difficulty (missing: medium). Serving builds them from a request's body too."""
    topics = topics[["id", "subject_id"]].rename(columns={"id": "topic_id"})
    enrolled = enrolments.merge(topics, on="subject_id")
    enrolled["interested"] = [
        float((u, int(t)) in interested)
        for u, t in zip(enrolled["user_id"], enrolled["topic_id"], strict=True)
    ]
    enrolled["preferred_difficulty"] = enrolled["user_id"].map(difficulty).fillna("medium")
    columns = ["user_id", "topic_id", "subject_id", "interested", "preferred_difficulty"]
    return enrolled[columns].sort_values(["user_id", "topic_id"]).reset_index(drop=True)


CANDIDATE_COLUMNS = (
    "interested",
    "practised",
    *INTERACTION_COLUMNS,
    "subject_attempts",
    "subject_accuracy",
    "relative_accuracy",
    "positions_ahead",
    "syllabus_weight",
    "position",
    "mean_difficulty",
    "difficulty_gap",
    "paper_frequency",
    "mean_rating",
)


def candidate_topics(
    frames: SourceFrames, as_of: datetime, content: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (student, enrolled topic) as of `as_of`: the topics a recommendation
    ranks. Interaction columns are 0 for a topic never practised (its accuracies NaN);
    `positions_ahead` is the topic's syllabus position after the furthest topic the student
    has practised in the subject (NaN when none), `difficulty_gap` its question difficulty
    against the student's preferred level. `content` is `topic_content` when the caller
    keeps it: it depends on the catalogue and every student's ratings, not on the
    student (serving computes it once per catalogue copy, not per request)."""
    if content is None:
        content = topic_content(frames, as_of)
    return assemble_candidates(student_context(frames, as_of), interactions(frames, as_of), content)


def assemble_candidates(
    context: pd.DataFrame, practice: pd.DataFrame, content: pd.DataFrame
) -> pd.DataFrame:
    """`candidate_topics` from its parts: `student_context` rows, `interactions` rows and
    `topic_content` (serving passes parts built from a request's body)."""
    content = content.drop(columns="subject_id")
    frame = context.merge(practice, on=["user_id", "topic_id"], how="left").merge(
        content, on="topic_id", how="left"
    )
    frame["practised"] = frame["attempts"].notna().astype(float)
    frame = frame.fillna({"attempts": 0.0, "attempts_last_30d": 0.0, "accuracy_gain": 0.0})
    by_subject = frame.groupby(["user_id", "subject_id"])
    right = frame["accuracy"].fillna(0.0) * frame["attempts"]
    frame["subject_attempts"] = by_subject["attempts"].transform("sum")
    subject_right = right.groupby([frame["user_id"], frame["subject_id"]]).transform("sum")
    frame["subject_accuracy"] = (subject_right / frame["subject_attempts"]).where(
        frame["subject_attempts"] > 0
    )
    frame["relative_accuracy"] = frame["accuracy"] - frame["subject_accuracy"]
    furthest = frame["position"].where(frame["practised"] > 0)
    frame["positions_ahead"] = frame["position"] - furthest.groupby(
        [frame["user_id"], frame["subject_id"]]
    ).transform("max")
    frame["difficulty_gap"] = frame["mean_difficulty"] - frame["preferred_difficulty"].map(
        PREFERRED_LEVEL
    ).astype(float)
    columns = ["user_id", "topic_id", "subject_id", "preferred_difficulty", *CANDIDATE_COLUMNS]
    result = frame[columns].sort_values(["user_id", "topic_id"]).reset_index(drop=True)
    result[list(CANDIDATE_COLUMNS)] = result[list(CANDIDATE_COLUMNS)].astype(float).round(10)
    return result
