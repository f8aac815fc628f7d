"""The data gate: clean seeded data passes; a corrupted copy for each kind of failure is
stopped with its own message naming table, column, expectation and failing share; and a
failing snapshot never replaces the current one nor reaches anything downstream."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from core.exceptions import DataValidationError
from features.snapshot import RAW_DIR, read_manifest
from features.validation import GateReport, GateSettings, enforce, report_path, validate_snapshot
from pipelines.ingest import ingest_flow
from tests.conftest import END_DATE

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)


def corrupt(
    snapshot: Path, tmp_path: Path, table: str, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> Path:
    copy = tmp_path / "corrupted"
    shutil.copytree(snapshot, copy)
    path = copy / f"{table}.parquet"
    schema = pq.read_schema(path)
    frame = change(pq.read_table(path).to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    return copy


def gate(
    snapshot: Path, *, as_of: datetime = AS_OF, previous_rows: dict[str, int] | None = None
) -> GateReport:
    return validate_snapshot(
        snapshot, as_of=as_of, previous_rows=previous_rows, settings=GateSettings()
    )


def only_failure(report: GateReport) -> str:
    assert not report.success
    messages = [f.describe() for f in report.failures]
    assert len(messages) == 1, messages
    with pytest.raises(DataValidationError) as stopped:
        enforce(report)
    assert messages[0] in str(stopped.value)
    return messages[0]


def test_clean_seeded_data_passes(clean_snapshot: Path) -> None:
    report = gate(clean_snapshot)
    assert report.success, report.summary()
    assert report.tables["test_answers"]["expectations"] >= 10


def test_nulls_in_a_key_are_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    def null_user(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:25], "user_id"] = None
        return frame

    report = gate(corrupt(clean_snapshot, tmp_path, "study_activity", null_user))
    messages = [f.describe() for f in report.failures]
    share = 25 / report.tables["study_activity"]["rows"]
    assert (
        f"study_activity.user_id: expect_column_values_to_not_be_null (25 rows, {share:.2%} of rows fail)"
        in messages
    )
    # A null key also breaks the (user, day) uniqueness; nothing else is flagged.
    assert {f.table for f in report.failures} == {"study_activity"}
    with pytest.raises(DataValidationError, match="expect_column_values_to_not_be_null"):
        enforce(report)


def test_untimed_answers_and_questions_without_a_paper_pass(
    clean_snapshot: Path, tmp_path: Path
) -> None:
    """What real apps lack is allowed: no time on an answer, no paper behind a question
    (several such questions with the same number do not clash on the (paper, number)
    key: a null in a key clashes with nothing, as in the database)."""

    def untimed(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[::3], "time_taken_seconds"] = None
        return frame

    def paperless(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:5], "paper_id"] = None
        frame.loc[frame.index[:5], "question_number"] = 1
        return frame

    answers = corrupt(clean_snapshot, tmp_path / "a", "test_answers", untimed)
    both = corrupt(answers, tmp_path / "b", "questions", paperless)
    report = gate(both)
    assert report.success, report.summary()


def test_out_of_range_values_are_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    def impossible_score(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:10], "score_percent"] = 150.0
        return frame

    report = gate(corrupt(clean_snapshot, tmp_path, "tests", impossible_score))
    message = only_failure(report)
    assert message.startswith("tests.score_percent: expect_column_values_to_be_between")
    assert report.failures[0].failing_share == pytest.approx(
        10 / report.tables["tests"]["rows"], rel=1e-3
    )


def test_duplicate_keys_are_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    def duplicate(frame: pd.DataFrame) -> pd.DataFrame:
        again = frame.iloc[[0]].assign(question_number=99)  # only the primary key repeats
        return pd.concat([frame, again], ignore_index=True)

    message = only_failure(gate(corrupt(clean_snapshot, tmp_path, "questions", duplicate)))
    assert message.startswith("questions.id: expect_column_values_to_be_unique")


def test_orphaned_rows_are_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    def orphan(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:3], "question_id"] = 9_999_999
        return frame

    message = only_failure(gate(corrupt(clean_snapshot, tmp_path, "test_answers", orphan)))
    assert message.startswith(
        "test_answers.question_id: references questions.id (expect_column_values_to_be_in_set) ("
    )


def test_an_empty_table_is_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    report = gate(corrupt(clean_snapshot, tmp_path, "past_papers", lambda f: f.iloc[0:0]))
    messages = [f.describe() for f in report.failures]
    assert any(
        m.startswith("past_papers: expect_table_row_count_to_be_between (observed 0)")
        for m in messages
    )
    # and every question now points at a paper that is not there
    assert any(m.startswith("questions.paper_id: references past_papers.id") for m in messages)


def test_stale_data_is_stopped(clean_snapshot: Path) -> None:
    report = gate(clean_snapshot, as_of=AS_OF + timedelta(days=30))
    tables = {f.table for f in report.failures}
    assert tables == {"test_answers", "tests", "study_activity", "user_progress"}
    assert all(f.expectation == "expect_column_max_to_be_between" for f in report.failures)
    assert "test_answers.answered_at: expect_column_max_to_be_between (observed" in report.summary()


def test_a_shrunken_table_is_stopped(clean_snapshot: Path) -> None:
    manifest = read_manifest(clean_snapshot)
    assert manifest is not None
    previous = {name: t.rows for name, t in manifest.tables.items()}
    previous["user_progress"] = int(previous["user_progress"] * 1.5)  # a third of it vanished
    message = only_failure(gate(clean_snapshot, previous_rows=previous))
    assert message.startswith("user_progress: expect_table_row_count_to_be_between (observed")


def test_a_wrong_type_is_stopped(clean_snapshot: Path, tmp_path: Path) -> None:
    copy = tmp_path / "typed"
    shutil.copytree(clean_snapshot, copy)
    table = pq.read_table(copy / "topics.parquet")
    weights = pa.array([str(v) for v in table.column("syllabus_weight").to_pylist()])
    index = table.schema.get_field_index("syllabus_weight")
    pq.write_table(table.set_column(index, "syllabus_weight", weights), copy / "topics.parquet")
    messages = [f.describe() for f in gate(copy).failures]
    assert any(
        m.startswith("topics.syllabus_weight: expect_column_values_to_be_of_type") for m in messages
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_failing_snapshot_is_not_published(tmp_path: Path, sqlite_url: str) -> None:
    from synthetic.generator import seed_source
    from tests.conftest import migrated_engine

    engine: Engine = migrated_engine(sqlite_url)
    seed_source(
        engine, students=20, seed=4, days=90, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    data = tmp_path / "data"
    first = ingest_flow(source_url=sqlite_url, data_dir=data, as_of=AS_OF)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM question_ratings"))
        conn.execute(
            text("UPDATE tests SET score_percent = 100 WHERE id IN (SELECT id FROM tests LIMIT 3)")
        )
        conn.execute(text("DELETE FROM user_progress WHERE id % 2 = 0"))  # half of it gone
    with pytest.raises(
        DataValidationError, match="user_progress: expect_table_row_count_to_be_between"
    ):
        ingest_flow(source_url=sqlite_url, data_dir=data, as_of=AS_OF)
    kept = read_manifest(data / RAW_DIR)
    assert kept is not None
    assert kept.content_hash == first.content_hash  # the good snapshot stays current
    assert (data / ".raw.rejected" / "manifest.json").exists()  # the bad one is kept to inspect
    assert '"success": false' in report_path(data).read_text()


def test_a_tiny_failing_share_is_still_shown() -> None:
    from features.validation import Failure

    failure = Failure(
        "test_answers", "test_id", "expect_column_values_to_be_in_set", 2 / 523_513, None, 2
    )
    assert (
        failure.describe()
        == "test_answers.test_id: expect_column_values_to_be_in_set (2 rows, 0.00038% of rows fail)"
    )
