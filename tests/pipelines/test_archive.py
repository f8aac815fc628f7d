"""Archiving `model_predictions` on SQLite and the real PostgreSQL, through Prefect's real
engine: old rows move into Parquet once, recent rows stay, and a run stopped between
writing a batch and deleting it (or in the middle of writing it) loses and duplicates
nothing when it is run again. The stops are injected by monkeypatching one step to raise
once: a real crash cannot be timed between two statements."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, text

from core.config import get_settings
from core.exceptions import ArchiveError
from features.schema import ModelPrediction
from pipelines import archive
from pipelines.archive import ARCHIVE_DIR, archive_flow, read_archive
from prepiq.cli import main
from tests.conftest import migrated_engine

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RETENTION_DAYS = 30
OLD_DAYS = (45, 40, 31)  # days before NOW: all before the cutoff (2026-10-21)
PER_DAY = 7


def seed_predictions(engine: Engine) -> list[int]:
    """PER_DAY rows on each old day, interleaved with recent ones (ids out of date order,
    as several service workers write them); returns the ids that should be archived."""
    rows = []
    for n in range(PER_DAY):
        for days in (*OLD_DAYS, 2, 0):
            rows.append(
                {
                    "model_name": "prepiq-focus-area",
                    "model_version": "3",
                    "user_id": None,
                    "request_id": f"req-{days}-{n}",
                    "inputs_digest": "0" * 64,
                    "request": {"user_id": "u1", "n": n, "nested": {"days": days}},
                    "response": {"topics": [1, 2], "score": 0.5},
                    "latency_ms": 3.5,
                    "created_at": NOW - timedelta(days=days, minutes=n),
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(ModelPrediction), rows)
    with engine.connect() as conn:
        old = conn.execute(
            select(ModelPrediction.id).where(
                ModelPrediction.created_at < archive.cutoff_for(NOW, RETENTION_DAYS)
            )
        )
        return sorted(old.scalars())


def table_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(ModelPrediction.id)).scalars())


def archived_ids(data: Path) -> list[int]:
    return sorted(read_archive(data / ARCHIVE_DIR).column("id").to_pylist())


def run(url: str, data: Path) -> archive.ArchiveReport:
    return archive_flow(
        retention_days=RETENTION_DAYS, source_url=url, data_dir=data, batch_rows=3, now=NOW
    )


def fail_once(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make `pipelines.archive.<name>` raise on its first call, then behave."""
    real = getattr(archive, name)
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(f"injected stop in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(archive, name, flaky)


def test_old_rows_move_to_parquet_once_and_recent_rows_stay(any_url: str, tmp_path: Path) -> None:
    engine = migrated_engine(any_url)
    old = seed_predictions(engine)
    everything = table_ids(engine)
    assert len(old) == len(OLD_DAYS) * PER_DAY
    report = run(any_url, tmp_path)
    assert report.rows_archived == len(old)
    assert archived_ids(tmp_path) == old
    assert table_ids(engine) == sorted(set(everything) - set(old))
    days = sorted(p.name for p in (tmp_path / ARCHIVE_DIR).iterdir())
    assert days == ["day=2026-10-06", "day=2026-10-11", "day=2026-10-20"]
    assert len(report.files) == len(OLD_DAYS) * 3  # 7 rows a day in parts of at most 3
    row = read_archive(tmp_path / ARCHIVE_DIR).to_pylist()[0]
    assert json.loads(row["request"])["nested"] == {"days": 45}
    assert row["created_at"].tzinfo is not None
    assert run(any_url, tmp_path).rows_archived == 0  # nothing left to do
    assert archived_ids(tmp_path) == old


@pytest.mark.parametrize("step", ["delete_archived", "_fsync"])
def test_a_run_stopped_half_way_then_rerun_keeps_every_row_exactly_once(
    any_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """`delete_archived`: the part file is written, its rows not yet deleted. `_fsync`:
    the part file is half written (only its temporary file exists)."""
    engine = migrated_engine(any_url)
    old = seed_predictions(engine)
    everything = table_ids(engine)
    fail_once(monkeypatch, step)
    with pytest.raises(OSError, match="injected stop"):
        run(any_url, tmp_path)
    assert table_ids(engine) == everything  # nothing deleted yet
    report = run(any_url, tmp_path)
    assert report.rows_recovered == (3 if step == "delete_archived" else 0)
    assert report.rows_archived + report.rows_recovered == len(old)
    assert archived_ids(tmp_path) == old  # each old row once
    assert table_ids(engine) == sorted(set(everything) - set(old))
    assert not list((tmp_path / ARCHIVE_DIR).rglob("*.tmp"))


def test_a_part_file_that_disagrees_with_the_table_stops_the_run(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_predictions(engine)
    fail_once(monkeypatch, "delete_archived")
    with pytest.raises(OSError):
        run(sqlite_url, tmp_path)
    (part,) = (tmp_path / ARCHIVE_DIR).rglob("part-*.parquet")
    first_id = int(part.name.split("-")[1])
    with engine.begin() as conn:  # someone removed one of the file's rows by hand
        conn.execute(delete(ModelPrediction).where(ModelPrediction.id == first_id))
    with pytest.raises(ArchiveError, match="holds 3 rows but the table has 2"):
        run(sqlite_url, tmp_path)


def test_cli_archive_uses_the_retention_setting(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_predictions(engine)
    monkeypatch.setenv("PREPIQ_SOURCE_URL", sqlite_url)
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PREPIQ_PREDICTION_RETENTION_DAYS", "1")
    get_settings.cache_clear()
    try:
        assert main(["archive", "--batch-rows", "100"]) == 0
        # Relative to the real clock every seeded row is older than a day.
        assert table_ids(engine) == []
        assert "archived 35 model_predictions rows" in capsys.readouterr().out
        assert main(["archive", "--retention-days", "-1"]) == 2
    finally:
        get_settings.cache_clear()


def test_sqlite_timestamps_with_and_without_fractions_fall_on_their_own_day(
    sqlite_url: str, tmp_path: Path
) -> None:
    """SQLite keeps timestamps as text: its CURRENT_TIMESTAMP writes `... 00:00:00`,
    SQLAlchemy `... 00:00:00.000000`; both must be archived under their own day."""
    engine = migrated_engine(sqlite_url)
    stamps = ["2026-08-01 00:00:00", "2026-08-02 00:00:00", "2026-08-02 00:00:00.000000"]
    with engine.begin() as conn:
        for stamp in [*stamps, "2026-08-03 00:00:00"]:
            conn.execute(
                text(
                    "INSERT INTO model_predictions (model_name, model_version, request_id, "
                    "inputs_digest, request, response, latency_ms, created_at) VALUES "
                    "('m', '1', 'r', 'x', '{}', '{}', 1.0, :stamp)"
                ),
                {"stamp": stamp},
            )
    cutoff = datetime(2026, 8, 3, tzinfo=UTC)
    report = archive.archive_predictions(engine, tmp_path, cutoff, batch_rows=10)
    assert report.days == ["2026-08-01", "2026-08-02"]
    assert [int(p.name.split("-")[1]) for p in sorted(tmp_path.rglob("*.parquet"))] == [1, 2]
    assert table_ids(engine) == [4]
