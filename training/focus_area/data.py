"""Focus-area examples and labels.

Examples are (student, topic) pairs at a point in time t: features are the student's test
statistics on the topic up to t (`features.focus`); the label comes from the source
itself: the student's accuracy on the topic over the following window falls below a
threshold (`params.yaml: focus_area`), either as the raw share of right answers or judged
against the difficulty of the questions answered (`label_basis`, see `later_results`).
The generator's true weak topics are never a training input; they are a second yardstick
for evaluation on synthetic data (`training.focus_area.evaluation.truth_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from core.exceptions import SourceDataError
from features.focus import EXPECTED_BY_DIFFICULTY, answer_table, topic_test_stats
from features.frames import SourceFrames
from training.focus_area.params import FocusAreaParams
from training.slices import with_slice_columns
from training.splits import window_split

LABEL = "weak"

# A question's observed share of right answers is shrunk toward the app's rating of it
# (`features.focus.EXPECTED_BY_DIFFICULTY`) by this many pseudo-answers.
QUESTION_PRIOR_ANSWERS = 10


def question_rates(questions: pd.DataFrame, known: pd.DataFrame) -> pd.Series:
    """Each question's expected share of right answers (index: question id): its observed
    rate over the answers in `known` (`answer_table` rows), shrunk toward the app's rating
    so a question answered a few times (or never) keeps about its rated rate."""
    prior = questions.set_index("id")["difficulty"].map(EXPECTED_BY_DIFFICULTY).astype(float)
    observed = known.groupby("question_id")["correct"].agg(["sum", "size"])
    observed = observed.reindex(prior.index).fillna(0.0)
    return (observed["sum"] + QUESTION_PRIOR_ANSWERS * prior) / (
        observed["size"] + QUESTION_PRIOR_ANSWERS
    )


def later_results(
    frames: SourceFrames,
    answers: pd.DataFrame,
    origin: datetime,
    p: FocusAreaParams,
    known: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (student, topic) with at least `min_label_answers` answers in the label window
    after `origin`: `later_accuracy` (what the label thresholds) and `later_answers`.

    `raw`: the share of right answers in the window. `adjusted`: the same answers judged
    against the questions they were: the mean of (right - the question's expected rate)
    plus the topic's reference rate (the mean expected rate over all the topic's
    questions), i.e. the share the student would get on the topic's questions as a whole,
    not on the draw of easy or hard ones they happened to get. The expected rates come
    from `known` (answers given up to `origin`; default: those in `answers`), never from
    the window itself."""
    end = origin + timedelta(days=p.label_window_days)
    at = answers["answered_at"]
    later = answers[(at > pd.Timestamp(origin)) & (at <= pd.Timestamp(end))]
    keys = ["user_id", "topic_id"]
    if p.label_basis == "adjusted":
        if known is None:
            known = answers
        known = known[known["answered_at"] <= pd.Timestamp(origin)]
        questions = frames["questions"][["id", "topic_id", "difficulty"]]
        rates = question_rates(questions, known)
        reference = rates.groupby(questions.set_index("id")["topic_id"]).mean()
        later = later.assign(correct=later["correct"] - later["question_id"].map(rates))
    outcome = later.groupby(keys)["correct"].agg(["mean", "size"])
    outcome = outcome[outcome["size"] >= p.min_label_answers]
    if p.label_basis == "adjusted":
        topics = outcome.index.get_level_values("topic_id")
        outcome["mean"] += reference.reindex(topics).to_numpy()
    return outcome.rename(columns={"mean": "later_accuracy", "size": "later_answers"}).reset_index()


def examples_at(
    frames: SourceFrames,
    origin: datetime,
    p: FocusAreaParams,
    answers: pd.DataFrame | None = None,
    known: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Labelled (student, topic) pairs at `origin`: features up to it, results after it
    (`later_results`). `answers` is `answer_table(frames)` when the caller already has
    it; `known` the answers the questions' expected rates of an adjusted label come from
    (every student's, of which those up to `origin` are used; default `answers`)."""
    features = topic_test_stats(frames, origin)
    answers = answer_table(frames) if answers is None else answers
    labelled = features.merge(
        later_results(frames, answers, origin, p, known), on=["user_id", "topic_id"]
    )
    labelled[LABEL] = (labelled["later_accuracy"] < p.weak_threshold).astype(int)
    labelled["origin"] = pd.Timestamp(origin)
    return labelled


@dataclass
class FocusAreaData:
    """Training examples (training students, earlier origins) and the hold-out (other
    students, the latest origin whose label window has passed)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_origin: datetime


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: FocusAreaParams, seed: int
) -> FocusAreaData:
    """Split by student and by time: hold-out students are scored at the last origin whose
    window has closed; training students at origins whose windows closed before it."""
    split = window_split(frames, as_of, p, seed)
    training_frames, holdout_frames = split.training, split.holdout
    train_origins, holdout_origin = split.train_origins, split.holdout_origin
    # The answer join is made once per group rather than once per origin. An adjusted
    # label's question rates come from every student's answers up to the origin (what the
    # source holds then; no answer of any label window is among them).
    training_answers = answer_table(training_frames)
    known = answer_table(frames) if p.label_basis == "adjusted" else None
    parts = [examples_at(training_frames, t, p, training_answers, known) for t in train_origins]
    train = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    holdout_answers = answer_table(holdout_frames)
    holdout = examples_at(holdout_frames, holdout_origin, p, holdout_answers, known)
    holdout = with_slice_columns(holdout, holdout_frames, holdout_answers, holdout_origin)
    for name, part in (("training", train), ("hold-out", holdout)):
        if len(part) == 0 or part[LABEL].nunique() < 2:
            raise SourceDataError(
                f"focus-area: too few labelled {name} examples ({len(part)}) with "
                f"params.yaml focus_area.label_window_days={p.label_window_days} and "
                f"min_label_answers={p.min_label_answers} on {len(frames['users'])} students; "
                "more history or a shorter window / fewer answers per label are needed"
            )
    return FocusAreaData(train=train, holdout=holdout, holdout_origin=holdout_origin)


def with_answers_on_topic(
    frames: SourceFrames, user: str, topic: int, correct: bool
) -> SourceFrames:
    """The frames with every answer of `user` on `topic` made right (or wrong): the probe
    of the behavioural checks."""
    questions = frames["questions"]
    on_topic = set(questions.loc[questions["topic_id"] == topic, "id"])
    answers = frames["test_answers"].copy()
    mine = (answers["user_id"] == user) & answers["question_id"].isin(on_topic)
    answers.loc[mine, "is_correct"] = correct
    return SourceFrames(frames.tables | {"test_answers": answers})
