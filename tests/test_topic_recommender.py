"""Topic recommender: labels are later practice that improved results in the source, the
hold-out is other students at a later time, nothing reads rows after its origin, the
collaborative fold-in is implicit's own solve, mastered topics are never recommended, and
the spec trains, evaluates and serves end to end."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sqlalchemy import Engine

from core.config import load_params
from core.exceptions import ConfigError, HoldoutError
from features.focus import answer_table
from features.frames import SourceFrames, from_snapshot
from features.recommend import CANDIDATE_COLUMNS, candidate_topics
from features.store import TABLES
from tests.conftest import END_DATE
from training import topic_recommender as tr
from training.metrics import ranking_metrics
from training.model_spec import Outcome, TrainingContext

Predict = Callable[[pd.DataFrame], pd.DataFrame]
AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
SMALL_SPACE = {
    "als_factors": [4, 8],
    "als_iterations": [3, 5],
    "gb_iterations": [20, 40],
    "gb_leaf_nodes": [8, 16],
    "gb_min_leaf": [20, 40],
}


def small_params() -> dict[str, Any]:
    params = copy.deepcopy(load_params())
    params["topic_recommender"] = params["topic_recommender"] | {
        "trials": 2,
        "min_window_answers": 3,
        "holdout_fraction": 0.3,
        "search_space": params["topic_recommender"]["search_space"] | SMALL_SPACE,
    }
    return params


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


@pytest.fixture(scope="module")
def context(clean_snapshot: Path, seeded_sqlite: tuple[Engine, Path]) -> TrainingContext:
    return TrainingContext(
        snapshot_dir=clean_snapshot,
        data_dir=clean_snapshot.parent,
        as_of=AS_OF,
        params=small_params(),
        seed=42,
        truth_dir=seeded_sqlite[1],
    )


@pytest.fixture(scope="module")
def dataset(context: TrainingContext, frames: SourceFrames) -> tr.RecommenderData:
    return tr.SPEC.prepare(context, frames)


@pytest.fixture(scope="module")
def outcome(context: TrainingContext, dataset: tr.RecommenderData) -> Outcome:
    """The real spec, tuned with 2 trials of a tiny search space, refitted and evaluated."""
    study = optuna.create_study(
        direction=tr.SPEC.direction, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(tr.SPEC.objective(context, dataset), n_trials=tr.SPEC.default_trials(context))
    return tr.SPEC.finish(context, dataset, study.best_params, study.best_value)


def test_labels_are_later_practice_that_improved(
    frames: SourceFrames, dataset: tr.RecommenderData
) -> None:
    p = tr.TopicRecommenderParams.from_params(small_params())
    holdout = dataset.holdout
    answers = answer_table(frames)
    origin = holdout["origin"].iloc[0]
    for label in (1, 0):
        row = holdout[(holdout[tr.LABEL] == label) & (holdout["practised"] > 0)].iloc[0]
        mine = answers[answers["user_id"] == row["user_id"]]
        topic = mine[mine["topic_id"] == row["topic_id"]]
        before = topic[topic["answered_at"] <= origin]
        subject_topics = frames["topics"].loc[
            frames["topics"]["subject_id"] == row["subject_id"], "id"
        ]
        subject = mine[(mine["answered_at"] <= origin) & mine["topic_id"].isin(subject_topics)]
        level = (before["correct"].sum() + p.prior_answers * subject["correct"].mean()) / (
            len(before) + p.prior_answers
        )
        window = topic[
            (topic["answered_at"] > origin)
            & (topic["answered_at"] <= origin + pd.Timedelta(days=p.label_window_days))
        ]
        improved = len(window) >= p.min_window_answers and (
            window["correct"].mean() - level >= p.min_improvement
        )
        assert row["earlier_level"] == pytest.approx(level)
        assert int(improved) == label
    assert 0.02 < dataset.train[tr.LABEL].mean() < 0.4  # a minority, but not a rare one


def test_holdout_is_other_students_at_a_later_time(dataset: tr.RecommenderData) -> None:
    p = tr.TopicRecommenderParams.from_params(small_params())
    held_out = set(dataset.holdout["user_id"])
    assert set(dataset.train["user_id"]).isdisjoint(held_out)
    assert set(dataset.reference["user_id"]).isdisjoint(held_out)  # nor does the CF part
    latest_window_end = dataset.train["origin"].max() + pd.Timedelta(days=p.label_window_days)
    assert latest_window_end <= dataset.holdout["origin"].min()
    assert dataset.train["origin"].nunique() >= 2
    assert dataset.holdout["user_id"].nunique() > 30


def test_candidates_read_no_rows_after_their_origin(frames: SourceFrames) -> None:
    origin = AS_OF - timedelta(days=40)
    answers = frames["test_answers"]
    student = str(answers["user_id"].value_counts().index[0])
    row = answers[answers["user_id"] == student].iloc[[0]]
    future = pd.concat([row] * 30, ignore_index=True)
    future["id"] = range(20_000_000, 20_000_030)
    future["is_correct"] = False
    future["answered_at"] = pd.Timestamp(origin + timedelta(hours=1))
    planted = SourceFrames(
        dict(frames.tables) | {"test_answers": pd.concat([answers, future], ignore_index=True)}
    )
    pd.testing.assert_frame_equal(
        candidate_topics(frames, origin), candidate_topics(planted, origin)
    )
    later = origin + timedelta(days=1)
    assert not candidate_topics(frames, later).equals(candidate_topics(planted, later))


def test_a_student_who_never_answered_gets_unpractised_candidates(frames: SourceFrames) -> None:
    """The new-student case: no answers at all. (An empty interactions frame used to hold
    objects, and pandas' 0 / 0 on them raised ZeroDivisionError.)"""
    answers = frames["test_answers"]
    student = str(answers["user_id"].iloc[0])
    unanswered = SourceFrames(
        dict(frames.tables) | {"test_answers": answers[answers["user_id"] != student]}
    )
    alone = SourceFrames(dict(frames.tables) | {"test_answers": answers.iloc[0:0]})
    for source in (unanswered, alone):
        candidates = candidate_topics(source, AS_OF)
        mine = candidates[candidates["user_id"] == student]
        assert len(mine) > 0
        assert (mine["practised"] == 0).all() and (mine["attempts"] == 0).all()
        assert mine["accuracy"].isna().all() and mine["subject_accuracy"].isna().all()
        assert all(dtype == np.float64 for dtype in candidates[list(CANDIDATE_COLUMNS)].dtypes)


def test_fold_in_is_implicits_least_squares(dataset: tr.RecommenderData) -> None:
    """The served fold-in gives the factors implicit's `recalculate_user` gives."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    hp = {
        "als_factors": 6,
        "als_regularization": 0.3,
        "als_iterations": 5,
        "als_alpha": 4.0,
        "als_gain_weight": 1.5,
    }
    cf = tr.CollaborativeFilter.fit(dataset.reference, dataset.topics, hp, seed=1)
    als = AlternatingLeastSquares(
        factors=6, regularization=0.3, alpha=4.0, iterations=1, num_threads=1
    )
    als.fit(csr_matrix((3, len(dataset.topics)), dtype=np.float32), show_progress=False)
    als.item_factors = cf.item_factors.astype(np.float32)
    student = dataset.holdout[dataset.holdout["practised"] > 0]["user_id"].iloc[0]
    rows = dataset.holdout[dataset.holdout["user_id"] == student]
    practised = rows[rows["attempts"] > 0]
    matrix = csr_matrix(
        (
            tr.practice_signal(practised, 1.5).astype(np.float32),
            (
                np.zeros(len(practised), dtype=int),
                np.searchsorted(dataset.topics, practised["topic_id"]),
            ),
        ),
        shape=(1, len(dataset.topics)),
    )
    expected = als.recalculate_user(0, matrix)
    _, factors = cf.user_factors(rows)
    np.testing.assert_allclose(factors[0], expected, rtol=1e-3, atol=1e-4)


def test_ranking_metrics_by_hand() -> None:
    groups = np.array(["a", "a", "a", "b", "b"])
    relevance = np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # b has nothing relevant: not averaged
    perfect = ranking_metrics(groups, np.array([3.0, 2.0, 1.0, 1.0, 0.0]), relevance, 2)
    assert perfect["ndcg_2"] == pytest.approx(1.0)
    assert perfect["groups"] == 1.0
    second = ranking_metrics(groups, np.array([2.0, 3.0, 1.0, 1.0, 0.0]), relevance, 2)
    assert second["ndcg_2"] == pytest.approx(1 / np.log2(3))
    left_out = ranking_metrics(groups, np.array([-np.inf, 3.0, 2.0, 1.0, 0.0]), relevance, 3)
    assert left_out["recall_3"] == 0.0  # an item scored -inf is never recommended


def test_unknown_search_space_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="als_bogus"):
        tr.TopicRecommenderParams.from_params(
            {"topic_recommender": {"search_space": {"als_bogus": [1, 2]}}}
        )


def one_student(frames: SourceFrames, dataset: tr.RecommenderData) -> pd.DataFrame:
    """Builder output for a hold-out student (unseen at training), from that student's
    rows alone, as serving builds it."""
    student = str(dataset.holdout.groupby("user_id")["practised"].sum().idxmax())
    return candidate_topics(frames.for_users([student]), dataset.holdout_origin)


def test_spec_trains_evaluates_and_serves_one_student(
    outcome: Outcome,
    context: TrainingContext,
    frames: SourceFrames,
    dataset: tr.RecommenderData,
) -> None:
    report = outcome.report
    assert {
        "model",
        "baseline_popularity",
        "baseline_weakest_first",
        "baseline_content_only",
    } <= set(report)
    for metrics in (report["model"], report["baseline_popularity"]):
        assert 0.0 < metrics["ndcg_10"] <= 1.0
        assert 0.0 < metrics["coverage"] <= 1.0
    assert 0.0 <= report["model"]["ece"] <= 1.0
    assert "ndcg_10" in report["against_truth"]["model"]
    assert outcome.main_metric == "ndcg_10"
    again, markdown = tr.SPEC.evaluate(
        context, dataset, lambda frame: outcome.python_model.predict(None, frame)
    )
    assert again["model"]["ndcg_10"] == pytest.approx(report["model"]["ndcg_10"])
    assert "baseline_popularity" in markdown

    rows = one_student(frames, dataset)
    ranked = outcome.python_model.predict(None, rows)
    assert list(ranked.columns) == tr.OUTPUT_COLUMNS
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert set(ranked["topic_id"]) <= set(rows["topic_id"])
    assert ranked["confidence"].between(0, 1).all()
    assert ranked["reason"].str.len().gt(0).all()
    assert list(outcome.input_example.columns) == list(rows.columns)  # the builder's columns
    assert set(CANDIDATE_COLUMNS) <= set(outcome.input_example.columns)


def test_recommendations_exclude_mastered_topics(
    outcome: Outcome, frames: SourceFrames, dataset: tr.RecommenderData
) -> None:
    """Behaviour: a topic with near-perfect recent accuracy over many attempts never makes
    the top k, however attractive it is otherwise; the same topic still failing does."""
    rows = one_student(frames, dataset)
    ranked = outcome.python_model.predict(None, rows)
    target = int(ranked["topic_id"].iloc[0])  # the model's own first choice ...
    at = rows["topic_id"] == target
    mastered = rows.copy()
    mastered.loc[at, ["attempts", "attempts_last_30d"]] = [40.0, 20.0]
    mastered.loc[at, ["accuracy", "accuracy_last_30d"]] = [0.97, 1.0]
    mastered.loc[at, "interested"] = 1.0
    assert target not in set(outcome.python_model.predict(None, mastered)["topic_id"])
    struggling = mastered.copy()
    struggling.loc[at, ["accuracy", "accuracy_last_30d"]] = [0.3, 0.3]
    top = outcome.python_model.predict(None, struggling).head(10)
    assert target in set(top["topic_id"])


# -- the promotion gate's methods ---------------------------------------------------------


def served(outcome: Outcome) -> Predict:
    """The trained model's predict, as the gate calls a loaded version's."""

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return outcome.python_model.predict(None, frame)

    return predict


def test_slices_cover_subject_tenure_and_activity(
    outcome: Outcome, context: TrainingContext, dataset: tr.RecommenderData
) -> None:
    """Every slice reports NDCG@10 over its students; the student slices split the
    hold-out's scored students, each subject slice ranks that subject's topics only."""
    holdout = dataset.holdout
    slices = tr.SPEC.slice_reports(context, dataset, served(outcome))
    subjects = [name for name in slices if name.startswith("subject ")]
    assert len(subjects) == holdout["subject_id"].nunique() > 1
    assert sum(slices[s]["candidates"] for s in subjects) == len(holdout)
    for metrics in slices.values():
        assert 0.0 <= metrics["ndcg_10"] <= 1.0
        assert 0 < metrics["n"] <= metrics["candidates"]
    scored = outcome.report["model"]["groups"]  # hold-out students with a relevant topic
    for pair in (
        ("new students", "long-standing students"),
        ("low recent activity", "high recent activity"),
    ):
        assert set(pair) <= set(slices)
        assert slices[pair[0]]["n"] + slices[pair[1]]["n"] == scored
        assert slices[pair[0]]["candidates"] + slices[pair[1]]["candidates"] == len(holdout)
        # The overall NDCG is the students' mean: the two halves' means weighted by n.
        mean = sum(slices[s]["ndcg_10"] * slices[s]["n"] for s in pair) / scored
        assert mean == pytest.approx(outcome.report["model"]["ndcg_10"])
    assert sum(slices[s]["n"] for s in subjects) >= scored  # a student in several subjects
    stale = copy.copy(dataset)
    stale.holdout = holdout.drop(columns=["days_since_joined"])
    with pytest.raises(HoldoutError, match="re-freeze"):
        tr.SPEC.slice_reports(context, stale, served(outcome))


def reversed_results(predict: Predict) -> Predict:
    """A broken model: it reads every accuracy the wrong way round."""

    def broken(frame: pd.DataFrame) -> pd.DataFrame:
        flipped = frame.copy()
        for column in ("accuracy", "accuracy_last_30d", "subject_accuracy"):
            flipped[column] = 1.0 - flipped[column]
        return predict(flipped)

    return broken


def test_behaviour_checks_pass_on_the_model_and_fail_on_broken_ones(
    outcome: Outcome, context: TrainingContext, dataset: tr.RecommenderData
) -> None:
    predict = served(outcome)
    checks = tr.SPEC.behaviour_checks(context, dataset, predict)
    assert len(checks) == 2
    assert all(ok for ok, _ in checks.values()), checks
    assert all("5/5" in why for _, why in checks.values())
    broken = tr.SPEC.behaviour_checks(context, dataset, reversed_results(predict))
    assert not all(ok for ok, _ in broken.values()), broken

    def recommends_nothing(frame: pd.DataFrame) -> pd.DataFrame:
        return predict(frame).head(0)

    nothing = tr.SPEC.behaviour_checks(context, dataset, recommends_nothing)
    assert not all(ok for ok, _ in nothing.values()), nothing


def test_probe_edits_answers_into_a_mastered_topic(
    frames: SourceFrames, dataset: tr.RecommenderData
) -> None:
    """The probe's edited answers make the builder's row mastered (or failing)."""
    p = tr.TopicRecommenderParams.from_params(small_params())
    origin = dataset.holdout_origin
    row = dataset.holdout[dataset.holdout["practised"] > 0].iloc[0]
    user, topic = str(row["user_id"]), int(row["topic_id"])
    mine = frames.for_users([user])
    for correct in (True, False):
        edited = tr.with_practice_on_topic(mine, user, topic, origin, correct, 20)
        rows = candidate_topics(edited, origin)
        at = rows[rows["topic_id"] == topic]
        assert at["attempts"].iloc[0] == row["attempts"] + 20
        assert at["accuracy_last_30d"].iloc[0] == float(correct)
        assert tr.MasteryRule(p.mastery_min_attempts, p.mastery_accuracy).applies(at)[0] == correct
        others = rows[rows["topic_id"] != topic].reset_index(drop=True)
        before = candidate_topics(mine, origin)
        before = before[before["topic_id"] != topic].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            others.drop(columns=["subject_attempts", "subject_accuracy", "relative_accuracy"]),
            before.drop(columns=["subject_attempts", "subject_accuracy", "relative_accuracy"]),
        )


def test_request_samples_are_single_students_the_model_ranks(
    outcome: Outcome, dataset: tr.RecommenderData
) -> None:
    samples = tr.SPEC.request_samples(dataset, 4)
    assert len(samples) == 4
    for sample in samples:
        assert sample["user_id"].nunique() == 1
        assert list(sample.columns) == list(outcome.input_example.columns)
        ranked = outcome.python_model.predict(None, sample)
        assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
        assert len(ranked) > 0
