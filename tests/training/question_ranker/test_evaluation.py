"""The question ranker's judging: the gate's slices are the subjects of the last paper, and
the behavioural check passes on the model and fails on a reversed one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frames import SourceFrames
from features.questions import question_history
from registry.gate import PromotionParams
from tests.training.question_ranker.conftest import AS_OF, trained_predict
from training.model_spec import Outcome, TrainingContext
from training.question_ranker.data import RankerData
from training.question_ranker.evaluation import gate_holdout, repeated_every_year
from training.question_ranker.spec import SPEC


def test_the_gates_slices_are_the_subjects_of_the_last_paper(
    outcome: tuple[Outcome, float], context: TrainingContext, data: RankerData
) -> None:
    """One slice per subject, on the rows `evaluate` scores (the last paper, which the
    logged model is not fitted on); no student slices (papers are catalogue data) and no
    per-year slices (the earlier test years are in the logged model's training labels)."""
    predict = trained_predict(outcome)
    slices = SPEC.slice_reports(context, data, predict)
    last = gate_holdout(data)
    assert last is data.cutoffs[-1]
    subjects = sorted(last.candidates["subject_id"].unique())
    assert list(slices) == [f"subject {s}" for s in subjects] and len(subjects) == 4
    judged = PromotionParams.from_params(context.params).min_slice_size
    for name, metrics in slices.items():
        size = (last.candidates["subject_id"] == int(name.removeprefix("subject "))).sum()
        assert metrics["n"] == metrics["candidates"] == size >= judged  # the gate judges it
        assert metrics["lists"] == 1 and 0 < metrics["ndcg_10"] <= 1
    assert sum(m["n"] for m in slices.values()) == len(last.candidates)
    # Each subject is one list of the main metric, which is the mean over the lists.
    report, _ = SPEC.evaluate(context, data, predict)
    assert np.isclose(np.mean([m["ndcg_10"] for m in slices.values()]), report["model"]["ndcg_10"])


OWN_HISTORY = ("asked_share", "recency_weighted_share", "asked_last_year", "slot_share")


def test_the_behaviour_probe_repeats_a_question_in_every_paper_of_its_subject(
    frames: SourceFrames,
) -> None:
    sat = frames.as_of(AS_OF)
    edited, probes = repeated_every_year(sat, [1, 2])
    assert set(probes) == {1, 2}
    papers = sat["past_papers"]
    history = question_history(edited, AS_OF)
    before = question_history(sat, AS_OF).set_index(["subject_id", "candidate_key"])
    for subject, question in probes.items():
        row = history[
            (history["subject_id"] == subject)
            & (history["candidate_key"] == question["candidate_key"])
        ].iloc[0]
        assert row["times_asked"] == (papers["subject_id"] == subject).sum() > 5
        assert (row[["asked_share", "recency_weighted_share", "asked_last_year"]] == 1).all()
        assert before.loc[(subject, question["candidate_key"]), "times_asked"] == 1
    questions, source = edited["questions"], sat["questions"]
    added = sum((papers["subject_id"] == s).sum() - 1 for s in probes)
    assert len(questions) == len(source) + added and questions["id"].is_unique
    pd.testing.assert_frame_equal(questions.head(len(source)), source)  # the rest untouched


def test_the_behaviour_check_passes_on_the_model_and_fails_on_a_reversed_one(
    outcome: tuple[Outcome, float], context: TrainingContext, data: RankerData
) -> None:
    """Issue #4 through `predict`: a question repeated every year ranks above one never
    asked. A predict fed each question's own history reversed (asked every year <-> never),
    or ranking by the reverse of the model's score, fails it."""
    predict = trained_predict(outcome)
    name = "a question repeated every year ranks above one never asked"
    checks = SPEC.behaviour_checks(context, data, predict)
    assert list(checks) == [name]
    passed, reason = checks[name]
    assert passed, reason
    assert reason.startswith("4/4 subjects") and "P(comes back)" in reason

    def history_reversed(frame: pd.DataFrame) -> pd.DataFrame:
        flipped = frame.copy()
        flipped[list(OWN_HISTORY)] = 1 - flipped[list(OWN_HISTORY)]
        flipped["expected_repeat"] = flipped["expected_repeat"].max() - flipped["expected_repeat"]
        flipped["times_asked"] = flipped["times_asked"].max() - flipped["times_asked"]
        flipped["years_since_asked"] = (
            flipped["years_since_asked"].max() - flipped["years_since_asked"]
        )
        return predict(flipped)

    def score_reversed(frame: pd.DataFrame) -> pd.DataFrame:
        out = predict(frame)
        out["score"] = -out["score"]
        out["repeat_probability"] = 1 - out["repeat_probability"]
        ranks = out["score"].groupby(frame["subject_id"].to_numpy()).rank(ascending=False)
        out["rank"] = ranks.astype("int64").to_numpy()
        return out

    for broken in (history_reversed, score_reversed):
        passed, reason = SPEC.behaviour_checks(context, data, broken)[name]
        assert not passed, (broken.__name__, reason)
    assert reason.startswith("0/4 subjects")
