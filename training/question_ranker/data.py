"""The question ranker's dataset: labelled cut-offs (the candidates at the end of an exam
year, graded by the next year's paper), the latest unlabelled history, and the text
caches every fit and evaluation shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import pandas as pd

from core.exceptions import ConfigError
from features.frames import SourceFrames
from features.questions import (
    TABLES,
    TextReference,
    normalise_text,
    past_questions,
    question_history,
)
from features.text import EmbeddingCache
from training.question_ranker.inference import candidate_features
from training.question_ranker.params import QuestionRankerParams


def grades(candidates: pd.DataFrame, next_questions: pd.DataFrame) -> np.ndarray:
    """2 when the candidate's text is in the next paper of its subject, 1 when its topic
    is, else 0 (`next_questions`: subject_id, topic_id, text)."""
    asked = pd.MultiIndex.from_arrays(
        [next_questions["subject_id"], next_questions["text"].map(normalise_text)]
    )
    topics = pd.MultiIndex.from_frame(next_questions[["subject_id", "topic_id"]])
    repeat = pd.MultiIndex.from_frame(candidates[["subject_id", "candidate_key"]]).isin(asked)
    topic = pd.MultiIndex.from_frame(candidates[["subject_id", "topic_id"]]).isin(topics)
    return np.where(repeat, 2, np.where(topic, 1, 0))


@dataclass
class CutOff:
    """The candidates at the end of an exam year, and the questions sat up to then."""

    year: int
    candidates: pd.DataFrame  # question_history rows (+ "grade" when labelled)
    questions: pd.DataFrame  # past_questions up to the cut-off


@dataclass
class RankerData:
    """Labelled cut-offs in time order, the latest history (every paper sat by as_of,
    unlabelled), which cut-off years are ranked as hold-out tests, and the text caches."""

    cutoffs: list[CutOff]
    latest: CutOff
    test_years: list[int]
    embeddings: EmbeddingCache
    _matrices: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    _references: dict[tuple[int, int], TextReference] = field(default_factory=dict)

    def reference(self, cutoff: CutOff, years: int) -> TextReference:
        key = (cutoff.year, years)
        if key not in self._references:
            self._references[key] = TextReference.fit(
                cutoff.questions, years, self.embeddings.embed
            )
        return self._references[key]

    def features(self, cutoff: CutOff, years: int) -> np.ndarray:
        """A cut-off's feature matrix for a reference window (computed once per pair)."""
        key = (cutoff.year, years)
        if key not in self._matrices:
            self._matrices[key] = candidate_features(
                cutoff.candidates, self.reference(cutoff, years), self.embeddings
            )
        return self._matrices[key]

    def before(self, year: int | None) -> list[CutOff]:
        """The labelled cut-offs whose next paper was sat by the end of `year` (all: None)."""
        return [c for c in self.cutoffs if year is None or c.year < year]


def cutoff_moment(papers: pd.DataFrame, year: int) -> datetime:
    """The end of the last exam day of `year`."""
    last_day = max(papers.loc[papers["exam_year"] == year, "exam_date"])
    return datetime.combine(last_day, time.max, tzinfo=UTC)


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: QuestionRankerParams, encoder: Any = None
) -> RankerData:
    """Cut-offs from the `min_history_years`-th exam year to the one before the last, each
    labelled by the next year's papers; every distinct text is encoded once."""
    frames = SourceFrames({name: frames[name] for name in TABLES}).as_of(as_of)
    papers = frames["past_papers"]
    years = sorted(int(y) for y in papers["exam_year"].unique())
    sat = past_questions(frames)
    cutoffs = []
    for year in years[p.min_history_years - 1 : -1]:
        moment = cutoff_moment(papers, year)
        candidates = question_history(frames, moment)
        following = sat[sat["exam_year"] == year + 1]
        # A subject without a paper next year has no labels (not "nothing came up").
        candidates = candidates[candidates["subject_id"].isin(following["subject_id"])]
        candidates = candidates.reset_index(drop=True)
        candidates["grade"] = grades(candidates, following)
        cutoffs.append(CutOff(year, candidates, sat[sat["exam_year"] <= year]))
    if len(cutoffs) < p.holdout_years + p.cv_folds + 1:
        raise ConfigError(
            f"question_ranker: {len(years)} exam years give {len(cutoffs)} cut-offs, too few "
            f"for {p.holdout_years} hold-out years and {p.cv_folds} validation folds"
        )
    embeddings = EmbeddingCache(encoder)
    embeddings.embed(sat["text"].drop_duplicates().tolist())  # every text, in one batch
    latest = CutOff(years[-1], question_history(frames, as_of), sat)
    return RankerData(
        cutoffs=cutoffs,
        latest=latest,
        test_years=[c.year for c in cutoffs[-p.holdout_years :]],
        embeddings=embeddings,
    )


def list_ids(frame: pd.DataFrame) -> np.ndarray:
    """One ranked list per (year, subject)."""
    return (frame["year"].astype(np.int64) * 1000 + frame["subject_id"].astype(np.int64)).to_numpy()


def lists_of(cutoff: CutOff) -> pd.DataFrame:
    """A labelled cut-off's candidates as the lists they are ranked in: one per subject,
    for the paper of the following year (`year`)."""
    return cutoff.candidates.assign(year=cutoff.year + 1)
