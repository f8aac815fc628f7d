"""The question ranker's dataset: labels come from the next year's paper in the source, and
every split is by time (papers are catalogue data)."""

from __future__ import annotations

import pandas as pd

from features.frames import SourceFrames
from features.questions import past_questions, question_history
from training.model_spec import Outcome
from training.question_ranker.data import RankerData, cutoff_moment
from training.question_ranker.spec import SPEC


def test_labels_are_the_next_years_paper(frames: SourceFrames, data: RankerData) -> None:
    sat = past_questions(frames)
    for cutoff in (data.cutoffs[0], data.cutoffs[-1]):
        following = sat[sat["exam_year"] == cutoff.year + 1]
        asked = set(zip(following["subject_id"], following["candidate_key"], strict=True))
        topics = set(zip(following["subject_id"], following["topic_id"], strict=True))
        for row in cutoff.candidates.itertuples():
            if (row.subject_id, row.candidate_key) in asked:
                assert row.grade == 2
            elif (row.subject_id, row.topic_id) in topics:
                assert row.grade == 1
            else:
                assert row.grade == 0
        grades = cutoff.candidates["grade"]
        assert (grades == 2).sum() >= 4  # classic questions come back every year
        assert 0.2 < (grades >= 1).mean() < 0.95


def test_cutoffs_see_only_papers_already_sat(frames: SourceFrames, data: RankerData) -> None:
    sat = past_questions(frames)
    for cutoff in data.cutoffs:
        assert cutoff.questions["exam_year"].max() == cutoff.year
        seen = sat[sat["exam_year"] <= cutoff.year]
        assert set(cutoff.candidates["candidate_key"]) == set(seen["candidate_key"])
        later_only = set(sat["candidate_key"]) - set(seen["candidate_key"])
        assert later_only  # new questions are set later, and no cut-off knows them
        assert later_only.isdisjoint(cutoff.candidates["candidate_key"])
    # The features at a cut-off are the builder's as of its last exam day: nothing later.
    cutoff = data.cutoffs[2]
    moment = cutoff_moment(frames["past_papers"], cutoff.year)
    pd.testing.assert_frame_equal(
        question_history(frames, moment), cutoff.candidates.drop(columns="grade")
    )


def test_holdout_and_tuning_are_split_by_time(data: RankerData) -> None:
    """Papers are the same for every student: the split is by exam year only. Each test year
    is ranked by cut-offs whose next paper was sat by then; tuning never reaches a test
    year."""
    assert data.test_years == [c.year for c in data.cutoffs[-3:]]
    for year in data.test_years:
        fitted_on = data.before(year)
        assert fitted_on
        assert max(c.year + 1 for c in fitted_on) <= year  # labels known at the test cut-off
    tuning = data.before(data.test_years[0])
    assert max(c.year + 1 for c in tuning) <= data.test_years[0]


def test_text_similarities_leave_the_candidate_itself_out(data: RankerData) -> None:
    cutoff = data.cutoffs[-1]
    reference = data.reference(cutoff, years=1)
    recent = cutoff.candidates[cutoff.candidates["asked_last_year"] == 1].head(30)
    vectors = data.embeddings.embed(recent["text"].tolist())
    similar = reference.similarities(recent, vectors)
    # The candidate is in the recent papers, but the closest *other* question is not itself.
    assert (similar["tfidf_recent_max_similarity"] < 0.999).all()
    assert (similar["embedding_recent_max_similarity"] < 0.999).all()
    assert (similar["embedding_recent_similarity"] > 0).all()
    unknown = recent.head(1).assign(subject_id=999)
    assert (reference.similarities(unknown, vectors[:1]).to_numpy() == 0).all()


def test_holdout_size_is_what_the_evaluation_scores(
    data: RankerData, outcome: tuple[Outcome, float]
) -> None:
    """The lists `min_holdout` counts are the ones the hold-out report ranks."""
    assert SPEC.holdout_size(data).count == outcome[0].report["model"]["lists"] > 0
