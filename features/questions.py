"""Question-importance ranker inputs: per candidate question of a subject as of a point
in time, its history in past papers (how often the same question was asked, how recently,
how often and how recently its topic comes up, the topic's weight), its difficulty and
marks, and its text.

A candidate is a distinct question text within a subject: a question set again in a later
paper is one candidate with several appearances.
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd

from features.frames import SourceFrames

TABLES = ("questions", "past_papers", "topics", "question_ratings")
NUMERIC_COLUMNS = (
    "times_asked",
    "years_since_asked",
    "asked_last_year",
    "topic_paper_share",
    "topic_paper_share_recent",
    "topic_years_since_asked",
    "topic_gap_matches_cycle",
    "topic_questions_last_paper",
    "syllabus_weight",
    "difficulty",
    "marks",
    "mean_rating",
)
RECENT_YEARS = 3


def normalise_text(text: str) -> str:
    """The comparison key of a question text: case, spacing and punctuation removed."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def question_history(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per candidate (subject, distinct text), for ranking the next paper."""
    frames = frames.as_of(as_of)
    papers = frames["past_papers"][["id", "subject_id", "exam_year"]].rename(
        columns={"id": "paper_id"}
    )
    questions = frames["questions"].merge(papers, on="paper_id")
    columns = ["subject_id", "candidate_key", "question_id", "topic_id", "text", *NUMERIC_COLUMNS]
    if questions.empty:
        return pd.DataFrame(columns=columns)
    questions["candidate_key"] = questions["text"].map(normalise_text)
    last_year = papers.groupby("subject_id")["exam_year"].max()
    papers_per_subject = papers.groupby("subject_id")["paper_id"].nunique()
    questions["subject_last_year"] = questions["subject_id"].map(last_year)

    ratings = frames["question_ratings"].groupby("question_id")["difficulty_rating"].mean()
    questions["rating"] = questions["id"].map(ratings)

    by_candidate = questions.sort_values("exam_year").groupby(["subject_id", "candidate_key"])
    candidates = by_candidate.agg(
        question_id=("id", "last"),
        topic_id=("topic_id", "last"),
        text=("text", "last"),
        times_asked=("paper_id", "nunique"),
        last_asked=("exam_year", "max"),
        subject_last_year=("subject_last_year", "first"),
        difficulty=("difficulty", "mean"),
        marks=("marks", "mean"),
        mean_rating=("rating", "mean"),
    ).reset_index()
    candidates["years_since_asked"] = candidates["subject_last_year"] - candidates["last_asked"]
    candidates["asked_last_year"] = (candidates["years_since_asked"] == 0).astype(float)

    # Topic history: share of papers asking it, overall and lately, and its rhythm.
    topic_years = questions[["subject_id", "topic_id", "exam_year"]].drop_duplicates()
    topic_stats = topic_years.groupby(["subject_id", "topic_id"]).agg(
        years_asked=("exam_year", "nunique"), topic_last=("exam_year", "max")
    )
    recent = topic_years[
        topic_years["exam_year"] > topic_years["subject_id"].map(last_year) - RECENT_YEARS
    ]
    topic_stats["recent_years"] = (
        recent.groupby(["subject_id", "topic_id"]).size().reindex(topic_stats.index).fillna(0)
    )
    topic_stats["cycle"] = topic_years.groupby(["subject_id", "topic_id"])["exam_year"].apply(
        _typical_gap
    )
    last_paper_counts = (
        questions[questions["exam_year"] == questions["subject_last_year"]]
        .groupby(["subject_id", "topic_id"])
        .size()
    )
    topic_stats["topic_questions_last_paper"] = last_paper_counts.reindex(topic_stats.index).fillna(
        0
    )
    topic_stats = topic_stats.reset_index()
    topic_stats["topic_paper_share"] = topic_stats["years_asked"] / topic_stats["subject_id"].map(
        papers_per_subject
    )
    topic_stats["topic_paper_share_recent"] = topic_stats["recent_years"] / RECENT_YEARS
    topic_stats["topic_years_since_asked"] = (
        topic_stats["subject_id"].map(last_year) - topic_stats["topic_last"]
    )
    # 1 when next year is where the topic's usual rhythm puts it (e.g. every other year).
    gap_next = topic_stats["topic_years_since_asked"] + 1
    topic_stats["topic_gap_matches_cycle"] = (np.abs(gap_next - topic_stats["cycle"]) < 0.5).astype(
        float
    )
    candidates = candidates.merge(
        topic_stats[
            [
                "subject_id",
                "topic_id",
                "topic_paper_share",
                "topic_paper_share_recent",
                "topic_years_since_asked",
                "topic_gap_matches_cycle",
                "topic_questions_last_paper",
            ]
        ],
        on=["subject_id", "topic_id"],
        how="left",
    )
    weights = frames["topics"].set_index("id")["syllabus_weight"]
    candidates["syllabus_weight"] = candidates["topic_id"].map(weights)
    candidates["mean_rating"] = candidates["mean_rating"].fillna(3.0)
    result = candidates[columns].sort_values(["subject_id", "candidate_key"]).reset_index(drop=True)
    result[list(NUMERIC_COLUMNS)] = result[list(NUMERIC_COLUMNS)].astype(float)
    return result


def _typical_gap(years: pd.Series) -> float:
    """The usual number of years between a topic's appearances (1 = every year)."""
    ordered = np.sort(years.to_numpy())
    if len(ordered) < 2:
        return 1.0
    return float(np.median(np.diff(ordered)))
