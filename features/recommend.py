"""Topic recommender inputs as of a point in time:

- interactions: a student-by-topic table of practice and results (attempts, accuracy,
  recent practice, gain between earlier and recent results), from `test_answers`;
- topic content: per topic, its subject, syllabus weight and position, the difficulty of
  its questions, how often past papers ask it, and how students rate its questions;
- student context: enrolled subjects, stated interests and preferred difficulty.
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
    "accuracy_gain",
    "days_since_last_attempt",
)
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
        return pd.DataFrame(columns=columns)
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
    overall["accuracy_gain"] = (recent_rate - earlier_rate).reindex(overall.index).fillna(0.0)
    overall["days_since_last_attempt"] = (now - overall["last"]).dt.total_seconds() / 86400
    overall["attempts"] = overall["attempts"].astype(float)
    result = overall.reset_index()[columns].sort_values(keys).reset_index(drop=True)
    result[list(INTERACTION_COLUMNS)] = result[list(INTERACTION_COLUMNS)].astype(float).round(10)
    return result


def topic_content(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per topic: what it is and how exams and students treat it."""
    frames = frames.as_of(as_of)
    topics = frames["topics"][["id", "subject_id", "syllabus_weight", "position"]].rename(
        columns={"id": "topic_id"}
    )
    questions = frames["questions"]
    papers = frames["past_papers"]
    per_topic = questions.groupby("topic_id").agg(mean_difficulty=("difficulty", "mean"))
    # Share of a subject's papers that asked the topic at least once.
    asked = questions[["topic_id", "paper_id"]].drop_duplicates().groupby("topic_id").size()
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
    topics = frames["topics"][["id", "subject_id"]].rename(columns={"id": "topic_id"})
    enrolled = frames["user_subjects"][["user_id", "subject_id"]].merge(topics, on="subject_id")
    preferences = frames["user_preferences"]
    interested = {
        (user, int(topic))
        for user, raw in zip(
            preferences["user_id"], preferences["interested_topic_ids"], strict=True
        )
        for topic in json.loads(raw or "[]")
    }
    enrolled["interested"] = [
        float((u, int(t)) in interested)
        for u, t in zip(enrolled["user_id"], enrolled["topic_id"], strict=True)
    ]
    difficulty = preferences.set_index("user_id")["preferred_difficulty"]
    enrolled["preferred_difficulty"] = enrolled["user_id"].map(difficulty).fillna("medium")
    columns = ["user_id", "topic_id", "subject_id", "interested", "preferred_difficulty"]
    return enrolled[columns].sort_values(["user_id", "topic_id"]).reset_index(drop=True)
