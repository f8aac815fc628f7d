"""Question-importance ranker inputs: per candidate question of a subject as of a point
in time, its history in past papers (how often the same question was asked, how recently,
how often and how recently its topic comes up, the topic's weight), its difficulty and
marks, and its text; and what the ranker compares a candidate's text with
(`TextReference`: the questions of each subject's most recent papers).

A candidate is a distinct question text within a subject: a question set again in a later
paper is one candidate with several appearances.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from features.frames import SourceFrames

TABLES = ("questions", "past_papers", "topics", "question_ratings")
NUMERIC_COLUMNS = (
    "times_asked",
    "asked_share",
    "recency_weighted_share",
    "years_since_asked",
    "asked_last_year",
    "topic_paper_share",
    "topic_paper_share_recent",
    "topic_years_since_asked",
    "topic_gap_matches_cycle",
    "topic_questions_last_paper",
    "topic_questions_2_years_ago",
    "topic_questions_3_years_ago",
    "topic_questions_per_paper",
    "topic_questions_forecast",
    "topic_questions_trend_forecast",
    "slot_share",
    "expected_repeat",
    "syllabus_weight",
    "difficulty",
    "marks",
    "mean_rating",
)
CANDIDATE_COLUMNS = (
    "subject_id",
    "candidate_key",
    "question_id",
    "topic_id",
    "text",
    *NUMERIC_COLUMNS,
)
RECENT_YEARS = 3
RECENCY_DECAY = 0.5  # weight of a paper one year older in `recency_weighted_share`
RHYTHM_PERIODS = (1, 2, 3)  # a topic comes up every year, every other or every third year
RHYTHM_PENALTY = 1.0  # per fitted parameter when choosing a topic's rhythm


def normalise_text(text: str) -> str:
    """The comparison key of a question text: case, spacing and punctuation removed."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def past_questions(frames: SourceFrames) -> pd.DataFrame:
    """Every question of the papers in `frames` with its paper's subject and year and its
    comparison key (cut `frames` with `as_of` first to see only papers already sat)."""
    papers = frames["past_papers"][["id", "subject_id", "exam_year"]].rename(
        columns={"id": "paper_id"}
    )
    questions = frames["questions"].merge(papers, on="paper_id")
    questions["candidate_key"] = questions["text"].map(normalise_text)
    return questions


def question_history(frames: SourceFrames, as_of: datetime) -> pd.DataFrame:
    """One row per candidate (subject, distinct text), for ranking the next paper.

    `asked_share` is the share of the subject's papers that asked the question;
    `recency_weighted_share` the same with each paper weighted `RECENCY_DECAY` per year of
    age (1 for a question asked in every paper so far); `slot_share` the share of its
    topic's past questions that were this one. `topic_questions_*` count the topic's
    questions per paper: in the papers 1-3 years back, on average, and as forecast for the
    next paper from the topic's rhythm (`rhythm_forecast`), without and with a trend;
    `expected_repeat` is the chance the question comes back if each forecast question of
    its topic picks it at its `slot_share`."""
    frames = frames.as_of(as_of)
    papers = frames["past_papers"][["id", "subject_id", "exam_year"]].rename(
        columns={"id": "paper_id"}
    )
    questions = past_questions(frames)
    columns = list(CANDIDATE_COLUMNS)
    if questions.empty:
        return pd.DataFrame(columns=columns)
    last_year = papers.groupby("subject_id")["exam_year"].max()
    papers_per_subject = papers.groupby("subject_id")["paper_id"].nunique()
    questions["subject_last_year"] = questions["subject_id"].map(last_year)
    # One weight per paper, so a question set twice in one paper counts once.
    papers["recency_weight"] = RECENCY_DECAY ** (
        papers["subject_id"].map(last_year) - papers["exam_year"]
    ).astype(float)
    weight_per_subject = papers.groupby("subject_id")["recency_weight"].sum()
    asked = questions[["subject_id", "candidate_key", "paper_id"]].drop_duplicates()
    recency_weighted = (
        asked.merge(papers[["paper_id", "recency_weight"]], on="paper_id")
        .groupby(["subject_id", "candidate_key"])["recency_weight"]
        .sum()
    )

    ratings = frames["question_ratings"].groupby("question_id")["difficulty_rating"].mean()
    questions["rating"] = questions["id"].map(ratings)

    by_candidate = questions.sort_values("exam_year").groupby(["subject_id", "candidate_key"])
    candidates = by_candidate.agg(
        question_id=("id", "last"),
        topic_id=("topic_id", "last"),
        text=("text", "last"),
        times_asked=("paper_id", "nunique"),
        times_set=("id", "size"),
        last_asked=("exam_year", "max"),
        subject_last_year=("subject_last_year", "first"),
        difficulty=("difficulty", "mean"),
        marks=("marks", "mean"),
        mean_rating=("rating", "mean"),
    ).reset_index()
    # A float: a given text new to the papers has no question (NaN, `rows_for_texts`), and
    # the logged model's signature checks every frame for one dtype.
    candidates["question_id"] = candidates["question_id"].astype("float64")
    candidates["asked_share"] = candidates["times_asked"] / candidates["subject_id"].map(
        papers_per_subject
    )
    candidates["recency_weighted_share"] = recency_weighted.reindex(
        pd.MultiIndex.from_frame(candidates[["subject_id", "candidate_key"]])
    ).to_numpy() / candidates["subject_id"].map(weight_per_subject)
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
    ).merge(_topic_rhythm(questions, papers, last_year), on=["subject_id", "topic_id"], how="left")
    candidates["slot_share"] = candidates["times_set"] / candidates["topic_questions_set"]
    candidates["expected_repeat"] = 1 - np.exp(
        -candidates["slot_share"] * candidates["topic_questions_forecast"]
    )
    weights = frames["topics"].set_index("id")["syllabus_weight"]
    candidates["syllabus_weight"] = candidates["topic_id"].map(weights)
    candidates["mean_rating"] = candidates["mean_rating"].fillna(3.0)
    result = candidates[columns].sort_values(["subject_id", "candidate_key"]).reset_index(drop=True)
    result[list(NUMERIC_COLUMNS)] = result[list(NUMERIC_COLUMNS)].astype(float)
    return result


def _topic_rhythm(
    questions: pd.DataFrame, papers: pd.DataFrame, last_year: pd.Series
) -> pd.DataFrame:
    """Per (subject, topic) asked so far: its questions per paper by years before the next
    exam (`papers`: paper_id, subject_id, exam_year)."""
    counts = questions.groupby(["subject_id", "topic_id", "exam_year"]).size().rename("count")
    topics = counts.reset_index()[["subject_id", "topic_id"]].drop_duplicates()
    grid = topics.merge(papers[["subject_id", "exam_year"]], on="subject_id")
    grid["count"] = (
        counts.reindex(pd.MultiIndex.from_frame(grid[["subject_id", "topic_id", "exam_year"]]))
        .fillna(0)
        .to_numpy()
    )
    grid["before_next"] = grid["subject_id"].map(last_year) + 1 - grid["exam_year"]
    by_topic = grid.groupby(["subject_id", "topic_id"])
    rhythm = by_topic["count"].agg(topic_questions_per_paper="mean", topic_questions_set="sum")
    for column, selected in {
        "topic_questions_2_years_ago": grid["before_next"] == 3,
        "topic_questions_3_years_ago": grid["before_next"] == 4,
    }.items():
        rhythm[column] = grid[selected].groupby(["subject_id", "topic_id"])["count"].mean()
    for column, trend in (
        ("topic_questions_forecast", False),
        ("topic_questions_trend_forecast", True),
    ):
        rhythm[column] = pd.Series(
            {
                key: rhythm_forecast(
                    group["count"].to_numpy(float), group["before_next"].to_numpy(), trend
                )
                for key, group in by_topic
            }
        )
    return rhythm.fillna(0.0).reset_index()


def rhythm_forecast(counts: np.ndarray, before_next: np.ndarray, trend: bool) -> float:
    """A topic's questions in the next paper from its counts in past papers `before_next`
    years before it: a mean per phase of the rhythm (every year, every other year, every
    third year), optionally plus a linear trend, the rhythm chosen by the least squared
    error on the log scale with `RHYTHM_PENALTY` per parameter (so a short history stays
    with every year)."""
    best_score, forecast = np.inf, float(counts.mean())
    for period in RHYTHM_PERIODS:
        phases = [(before_next % period == r).astype(float) for r in range(period)]
        design = np.column_stack(phases + ([-before_next.astype(float)] if trend else []))
        if design.shape[1] >= len(counts):
            continue
        beta = np.linalg.lstsq(design, counts, rcond=None)[0]
        squared_error = float(((counts - design @ beta) ** 2).sum())
        score = len(counts) * np.log(squared_error / len(counts) + 1e-3)
        score += RHYTHM_PENALTY * design.shape[1]
        if score < best_score:
            best_score, forecast = score, max(float(beta[0]), 0.0)  # phase 0: the next paper
    return forecast


def _typical_gap(years: pd.Series) -> float:
    """The usual number of years between a topic's appearances (1 = every year)."""
    ordered = np.sort(years.to_numpy())
    if len(ordered) < 2:
        return 1.0
    return float(np.median(np.diff(ordered)))


TEXT_COLUMNS = (
    "embedding_recent_similarity",
    "embedding_recent_max_similarity",
    "embedding_topic_recent_similarity",
    "tfidf_recent_similarity",
    "tfidf_recent_max_similarity",
    "tfidf_topic_recent_similarity",
)
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass
class TextReference:
    """What a candidate's text is compared with: the distinct questions of each subject's
    papers of its last `years` exam years, as unit-length text embeddings and TF-IDF vectors
    (vocabulary and weights fitted on every past question up to the same moment).

    Per candidate (cosine similarities, 0 where there is nothing to compare with):
    `*_recent_similarity` to the centroid of its subject's recent questions (the candidate
    itself counts when it was asked lately), `*_recent_max_similarity` to the closest other
    recent question of the subject (a rephrasing of it), `*_topic_recent_similarity` to the
    closest other recent question of its topic."""

    years: int
    vectorizer: TfidfVectorizer
    reference: pd.DataFrame  # subject_id, topic_id, candidate_key of the recent questions
    embeddings: np.ndarray  # [references, dim]
    tfidf: Any  # scipy CSR [references, vocabulary]

    @classmethod
    def fit(cls, questions: pd.DataFrame, years: int, embed: Embed) -> TextReference:
        """From `past_questions` of the papers already sat and a text embedder."""
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        vectorizer.fit(questions["text"].drop_duplicates())
        newest = questions.groupby("subject_id")["exam_year"].transform("max")
        recent = questions[questions["exam_year"] > newest - years].drop_duplicates(
            ["subject_id", "candidate_key"]
        )
        return cls(
            years=years,
            vectorizer=vectorizer,
            reference=recent[["subject_id", "topic_id", "candidate_key"]].reset_index(drop=True),
            embeddings=embed(recent["text"].tolist()),
            tfidf=vectorizer.transform(recent["text"]),
        )

    def similarities(self, candidates: pd.DataFrame, embeddings: np.ndarray) -> pd.DataFrame:
        """`TEXT_COLUMNS` for each candidate row (`subject_id`, `topic_id`, `text`), given
        the rows' embeddings."""
        out = np.zeros((len(candidates), len(TEXT_COLUMNS)))
        keys = candidates["text"].map(normalise_text).to_numpy()
        topics = candidates["topic_id"].to_numpy()
        subjects = candidates["subject_id"].to_numpy()
        tfidf = self.vectorizer.transform(candidates["text"])
        reference_subjects = self.reference["subject_id"].to_numpy()
        for subject in np.unique(subjects):
            rows = np.flatnonzero(subjects == subject)
            refs = np.flatnonzero(reference_subjects == subject)
            if not len(refs):
                continue
            other = keys[rows, None] != self.reference["candidate_key"].to_numpy()[None, refs]
            same_topic = other & (topics[rows, None] == self.reference["topic_id"].to_numpy()[refs])
            pairs = (
                (embeddings[rows], self.embeddings[refs]),
                (tfidf[rows].toarray(), self.tfidf[refs].toarray()),
            )
            for offset, (vectors, reference) in enumerate(pairs):
                centroid = reference.mean(axis=0)
                norm = np.linalg.norm(centroid)
                similarity = vectors @ reference.T
                column = 3 * offset
                out[rows, column] = vectors @ centroid / norm if norm > 0 else 0.0
                out[rows, column + 1] = np.where(other, similarity, 0.0).max(axis=1)
                out[rows, column + 2] = np.where(same_topic, similarity, 0.0).max(axis=1)
        return pd.DataFrame(out, columns=list(TEXT_COLUMNS), index=candidates.index)


TOPIC_COLUMNS = (*(c for c in NUMERIC_COLUMNS if c.startswith("topic_")), "syllabus_weight")


def rows_for_texts(candidates: pd.DataFrame, texts: Sequence[tuple[str, int]]) -> pd.DataFrame:
    """`question_history` rows for given (text, topic_id) pairs of one subject, from that
    subject's candidates: a text already asked gets its own history; a new one its topic's
    history and the history of a question never asked (no appearances, older than any
    paper, its topic's mean difficulty and marks, a neutral rating)."""
    by_key = candidates.set_index("candidate_key")
    never = float(candidates["years_since_asked"].max()) + 1.0
    rows = []
    for text, topic_id in texts:
        key = normalise_text(text)
        if key in by_key.index:
            row = by_key.loc[[key]].iloc[0].to_dict()
        else:
            topic = candidates[candidates["topic_id"] == topic_id]
            row = {c: float(topic[c].iloc[0]) for c in TOPIC_COLUMNS}
            row |= {c: 0.0 for c in ("times_asked", "asked_share", "recency_weighted_share")}
            row |= {"asked_last_year": 0.0, "slot_share": 0.0, "expected_repeat": 0.0}
            row |= {
                "years_since_asked": never,
                "difficulty": float(topic["difficulty"].mean()),
                "marks": float(topic["marks"].mean()),
                "mean_rating": 3.0,
                "subject_id": candidates["subject_id"].iloc[0],
                "question_id": np.nan,
                "topic_id": topic_id,
            }
        rows.append(row | {"candidate_key": key, "text": text})
    return pd.DataFrame(rows)[list(CANDIDATE_COLUMNS)]
