"""The topic recommender's dataset: candidate topics labelled from the source, the split by
student and by time, and the input example."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features.focus import answer_table
from features.frames import SourceFrames
from features.recommend import candidate_topics
from training.slices import with_slice_columns
from training.splits import window_split
from training.topic_recommender.inference import INPUT_COLUMNS, KEYS
from training.topic_recommender.params import TopicRecommenderParams

LABEL = "relevant"


def earlier_level(rows: pd.DataFrame, p: TopicRecommenderParams) -> pd.Series:
    """A student's level on a topic before the origin: their accuracy on it, shrunk toward
    their accuracy in the subject (0.5 with no answers in it), so a topic practised twice
    or never has a level to improve on."""
    base = rows["subject_accuracy"].fillna(0.5)
    right = rows["accuracy"].fillna(0.0) * rows["attempts"]
    return (right + p.prior_answers * base) / (rows["attempts"] + p.prior_answers)


def labelled_candidates(
    frames: SourceFrames, answers: pd.DataFrame, origin: datetime, p: TopicRecommenderParams
) -> pd.DataFrame:
    """Candidate topics at `origin` (features up to it) with the label from the window after
    it. `answers` is `answer_table(frames)`."""
    rows = candidate_topics(frames, origin)
    later = answers[
        (answers["answered_at"] > pd.Timestamp(origin))
        & (answers["answered_at"] <= pd.Timestamp(origin + timedelta(days=p.label_window_days)))
    ]
    outcome = later.groupby(KEYS)["correct"].agg(window_accuracy="mean", window_answers="size")
    rows = rows.merge(outcome.reset_index(), on=KEYS, how="left")
    rows["window_answers"] = rows["window_answers"].fillna(0)
    rows["earlier_level"] = earlier_level(rows, p)
    practised, improved = label_parts(rows, p)
    rows[LABEL] = (practised & improved).astype(int)
    rows["origin"] = pd.Timestamp(origin)
    return rows


def label_parts(rows: pd.DataFrame, p: TopicRecommenderParams) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of the label of labelled candidate rows: practised in the window
    (enough answers), and improved there on the earlier level (NaN accuracy: False)."""
    practised = (rows["window_answers"] >= p.min_window_answers).to_numpy()
    gain = (rows["window_accuracy"] - rows["earlier_level"]).to_numpy(dtype=float)
    return practised, np.nan_to_num(gain, nan=-np.inf) >= p.min_improvement


@dataclass
class RecommenderData:
    """Training examples (training students, earlier origins), the hold-out (other
    students at the latest origin whose window has closed) and `reference`: the training
    students' candidates at the hold-out origin, which the collaborative part and the
    popularity baseline learn from when the hold-out is scored."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    reference: pd.DataFrame
    holdout_origin: datetime
    topics: np.ndarray


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: TopicRecommenderParams, seed: int
) -> RecommenderData:
    """Split by student and by time: hold-out students are scored at the last origin whose
    window has closed; training students at origins whose windows closed before it."""
    split = window_split(frames, as_of, p, seed)
    training_frames, holdout_frames = split.training, split.holdout
    train_origins, holdout_origin = split.train_origins, split.holdout_origin
    training_answers = answer_table(training_frames)
    train = pd.concat(
        [labelled_candidates(training_frames, training_answers, t, p) for t in train_origins],
        ignore_index=True,
    )
    holdout_answers = answer_table(holdout_frames)
    holdout = labelled_candidates(holdout_frames, holdout_answers, holdout_origin, p)
    holdout = with_slice_columns(holdout, holdout_frames, holdout_answers, holdout_origin)
    return RecommenderData(
        train=train,
        holdout=holdout,
        reference=candidate_topics(training_frames, holdout_origin),
        holdout_origin=holdout_origin,
        topics=np.sort(frames["topics"]["id"].to_numpy()),
    )


def candidate_example(rows: pd.DataFrame) -> pd.DataFrame:
    """One real student's candidate rows, as the builder gives them (the input example)."""
    student = rows.loc[rows["practised"] > 0, "user_id"].iloc[0]
    return rows.loc[rows["user_id"] == student, INPUT_COLUMNS].reset_index(drop=True)
