"""Feature builders: point-in-time correct (a planted future row changes nothing), the
same values online (one student's rows from the database) as offline (the snapshot), and
feature tables written with their hashes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from features import focus, progress, questions, recommend
from features.frames import SourceFrames, from_snapshot, from_source
from features.store import BUILDERS, TABLES, build_feature_tables
from tests.conftest import END_DATE

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 12, 0, tzinfo=UTC) - timedelta(
    days=20
)

STUDENT_BUILDERS: dict[str, Callable[[SourceFrames, datetime], pd.DataFrame]] = {
    "progress": progress.daily_sequences,
    "focus": focus.topic_test_stats,
    "interactions": recommend.interactions,
    "context": recommend.student_context,
}


@pytest.fixture(scope="module")
def offline(clean_snapshot: Path) -> SourceFrames:
    return from_snapshot(clean_snapshot, TABLES)


def _busy_student(frames: SourceFrames) -> str:
    answers = frames["test_answers"]
    return str(answers["user_id"].value_counts().index[0])


def test_a_future_row_is_ignored(offline: SourceFrames) -> None:
    student = _busy_student(offline)
    answers = offline["test_answers"]
    row = answers[answers["user_id"] == student].iloc[[0]].copy()
    # The same student gets every answer of a topic wrong, but a day after as-of.
    future = pd.concat([row] * 30, ignore_index=True)
    future["id"] = range(10_000_000, 10_000_030)
    future["is_correct"] = False
    future["answered_at"] = pd.Timestamp(AS_OF + timedelta(days=1))
    planted = SourceFrames(
        dict(offline.tables) | {"test_answers": pd.concat([answers, future], ignore_index=True)}
    )
    for name, builder in {**STUDENT_BUILDERS, "questions": questions.question_history}.items():
        pd.testing.assert_frame_equal(builder(offline, AS_OF), builder(planted, AS_OF), obj=name)
    # ...and is seen once time has passed it.
    later = AS_OF + timedelta(days=2)
    assert not focus.topic_test_stats(offline, later).equals(focus.topic_test_stats(planted, later))


def test_online_features_equal_offline_ones(
    seeded_sqlite: tuple[Engine, Path], offline: SourceFrames
) -> None:
    engine, _ = seeded_sqlite
    student = _busy_student(offline)
    online = from_source(engine, student, TABLES)
    for name, builder in STUDENT_BUILDERS.items():
        batch = builder(offline, AS_OF)
        one = batch[batch["user_id"] == student].reset_index(drop=True)
        assert len(one) > 0, name
        pd.testing.assert_frame_equal(one, builder(online, AS_OF), obj=name)


def test_online_reads_only_that_students_rows(
    seeded_sqlite: tuple[Engine, Path], offline: SourceFrames
) -> None:
    engine, _ = seeded_sqlite
    student = _busy_student(offline)
    online = from_source(engine, student, ["test_answers", "users", "topics"])
    assert set(online["test_answers"]["user_id"]) == {student}
    assert list(online["users"]["id"]) == [student]
    assert len(online["topics"]) == len(offline["topics"])  # catalogue tables come whole


@pytest.mark.parametrize("keep_every", [1, 3])
def test_a_sequence_from_given_days_is_the_one_built_from_the_source(
    offline: SourceFrames, keep_every: int
) -> None:
    """What serving builds from the days a caller sends equals what training builds from
    the rows, also when the caller sends only some days (the rest: no activity, no test,
    completion carried forward, as the builder counts a day without rows)."""
    student = _busy_student(offline)
    built = progress.daily_sequences(offline.for_users([student]), AS_OF, window_days=60)
    days = built.assign(test_score=built["test_score"].where(built["had_test"] > 0))
    quiet = (days["study_minutes"] == 0) & (days["logins"] == 0) & (days["had_test"] == 0)
    # A day the caller leaves out must be one without activity; keep every day whose
    # completion changed, so carrying forward gives the same values, and the last day,
    # where the window ends.
    changed = days["completion_percent"].diff().fillna(1.0) != 0
    last = days.index == days.index[-1]
    sent = days[~quiet | changed | last | (days.index % keep_every == 0)]
    static = {c: float(built.iloc[-1][c]) for c in progress.STATIC_COLUMNS}
    columns = ["day", "study_minutes", "logins", "streak_days", "test_score", "completion_percent"]
    rebuilt = progress.sequence_from_days(sent[columns], static, 60, user_id=student)
    assert len(sent) < len(built) or keep_every == 1
    pd.testing.assert_frame_equal(rebuilt, built, check_dtype=False)


def test_focus_features_see_a_student_failing_a_topic(offline: SourceFrames) -> None:
    stats = focus.topic_test_stats(offline, AS_OF)
    worst = stats.sort_values("smoothed_accuracy").iloc[0]
    best = stats.sort_values("smoothed_accuracy").iloc[-1]
    assert worst["difficulty_adjusted_accuracy"] < best["difficulty_adjusted_accuracy"]
    assert stats["accuracy"].between(0, 1).all()
    assert (stats["attempts"] >= 1).all()


def test_question_history_counts_repeats(offline: SourceFrames) -> None:
    history = questions.question_history(offline, AS_OF)
    # One candidate per distinct text within a subject.
    assert not history.duplicated(["subject_id", "candidate_key"]).any()
    repeated = history[history["times_asked"] > 1]
    assert len(repeated) > 0  # classic questions come back
    assert (history["years_since_asked"] >= 0).all()


def test_feature_tables_are_written_with_hashes(clean_snapshot: Path, tmp_path: Path) -> None:
    first = build_feature_tables(clean_snapshot, tmp_path / "a", AS_OF)
    second = build_feature_tables(clean_snapshot, tmp_path / "b", AS_OF)
    assert first["content_hash"] == second["content_hash"]  # deterministic
    tables = first["tables"]
    assert isinstance(tables, dict)
    assert set(tables) == set(BUILDERS)
    for name in BUILDERS:
        assert (tmp_path / "a" / f"{name}.parquet").exists()
    later = build_feature_tables(clean_snapshot, tmp_path / "c", AS_OF + timedelta(days=10))
    assert later["content_hash"] != first["content_hash"]


@pytest.mark.usefixtures("prefect_harness")
def test_online_equals_offline_on_postgres(pg_url: str, tmp_path: Path) -> None:
    from pipelines.ingest import ingest_flow
    from synthetic.generator import seed_source
    from tests.conftest import migrated_engine

    engine = migrated_engine(pg_url)
    seed_source(
        engine, students=40, seed=8, days=90, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    ingest_flow(source_url=pg_url, data_dir=tmp_path / "data", as_of=AS_OF + timedelta(days=20))
    snapshot = from_snapshot(tmp_path / "data" / "raw", TABLES)
    student = _busy_student(snapshot)
    online = from_source(engine, student, TABLES, shared=snapshot)
    for name, builder in STUDENT_BUILDERS.items():
        batch = builder(snapshot, AS_OF)
        one = batch[batch["user_id"] == student].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, builder(online, AS_OF), obj=name)
