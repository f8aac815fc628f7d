"""Archiving `model_predictions`: rows older than the retention period
(`PREPIQ_PREDICTION_RETENTION_DAYS`) move into Parquet under the DVC-tracked
`data/archive/model_predictions/` and leave the table, one UTC day at a time.

Order, so that stopping anywhere loses and duplicates nothing:
1. a batch (the day's oldest `batch_rows` rows by id: every row of that day up to its last
   id) is written to `day=YYYY-MM-DD/part-<first id>-<last id>.parquet` through a
   temporary file renamed into place, so a part file is either whole or absent;
2. then exactly those rows are deleted in one transaction (a count check first).
A run that finds a part file whose rows are still in the table (the previous run stopped
between 1 and 2) only deletes them; rows are never written twice. Only whole days older
than the cutoff are archived, so a day's rows no longer change once it is worked on.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, task
from sqlalchemy import ColumnElement, Engine, String, Table, delete, func, literal, select

from core.config import get_settings
from core.database import get_engine
from core.exceptions import ArchiveError, ConfigError
from features.schema import ModelPrediction
from pipelines.alerts import alert_on_failure

ARCHIVE_DIR = Path("archive") / "model_predictions"
PART_NAME = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
TABLE: Table = ModelPrediction.__table__  # type: ignore[assignment]
JSON_COLUMNS = ("request", "response")
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("user_id", pa.string()),
        ("request_id", pa.string()),
        ("inputs_digest", pa.string()),
        ("request", pa.string()),  # JSON text: the documents have no fixed schema
        ("response", pa.string()),
        ("latency_ms", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class ArchiveReport:
    """What one archive run moved."""

    cutoff: str
    rows_archived: int = 0  # written to new part files and deleted
    rows_recovered: int = 0  # deleted for part files an interrupted run had written
    files: list[str] = field(default_factory=list)
    days: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"archived {self.rows_archived:,} model_predictions rows older than {self.cutoff} "
            f"into {len(self.files)} file(s) over {len(self.days)} day(s)"
            + (
                f"; finished {self.rows_recovered:,} from an interrupted run"
                if self.rows_recovered
                else ""
            )
        )


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    """Midnight (UTC) of the first day still kept: whole days before it are archived."""
    if retention_days < 0:
        raise ConfigError(f"retention days must be 0 or more, got {retention_days}")
    first_kept = (now.astimezone(UTC) - timedelta(days=retention_days)).date()
    return datetime.combine(first_kept, time(), tzinfo=UTC)


def archive_predictions(
    engine: Engine, root: Path, cutoff: datetime, batch_rows: int = 50_000
) -> ArchiveReport:
    """Move every `model_predictions` row created before `cutoff` into part files under
    `root`, oldest day first."""
    if batch_rows < 1:
        raise ConfigError(f"batch rows must be at least 1, got {batch_rows}")
    report = ArchiveReport(cutoff=cutoff.isoformat())
    while (day := oldest_day(engine, cutoff)) is not None:
        if day.isoformat() in report.days:  # never loop on rows the day's filter misses
            raise ArchiveError(f"model_predictions rows of {day} remain after archiving that day")
        archive_day(engine, root, day, batch_rows, report)
        report.days.append(day.isoformat())
    return report


def oldest_day(engine: Engine, before: datetime) -> date | None:
    with engine.connect() as conn:
        oldest = conn.execute(
            select(func.min(TABLE.c.created_at)).where(TABLE.c.created_at < _at(engine, before))
        ).scalar()
    return None if oldest is None else _utc(oldest).date()


def archive_day(
    engine: Engine, root: Path, day: date, batch_rows: int, report: ArchiveReport
) -> None:
    """Finish the day's part files left by an interrupted run, then move its other rows."""
    folder = root / f"day={day.isoformat()}"
    for stale in folder.glob("*.tmp"):  # a write that never completed: its rows are in the table
        stale.unlink()
    for part in sorted(folder.glob("part-*.parquet")):
        report.rows_recovered += delete_archived(engine, part)
    while rows := read_batch(engine, day, batch_rows):
        part = write_part(folder, rows)
        report.files.append(str(part))
        report.rows_archived += delete_archived(engine, part)


def read_batch(engine: Engine, day: date, batch_rows: int) -> list[dict[str, Any]]:
    """The day's oldest rows by id (all of that day's rows up to the last id returned)."""
    query = select(TABLE).where(*_on_day(engine, day)).order_by(TABLE.c.id).limit(batch_rows)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def write_part(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows to their part file atomically (temporary file, fsync, rename)."""
    for row in rows:
        row["created_at"] = _utc(row["created_at"])
        for column in JSON_COLUMNS:
            row[column] = json.dumps(row[column], sort_keys=True, default=str)
    path = folder / f"part-{rows[0]['id']:012d}-{rows[-1]['id']:012d}.parquet"
    if path.exists():
        raise ArchiveError(f"{path} exists although its rows are still in the table")
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), temporary)
    _fsync(temporary)
    temporary.replace(path)
    _fsync(folder)
    return path


def delete_archived(engine: Engine, part: Path) -> int:
    """Delete the rows of a written part file from the table, in one transaction; 0 when
    they are gone already. Raises ArchiveError when only some of them are there."""
    match = PART_NAME.match(part.name)
    if match is None:
        raise ArchiveError(f"unexpected file in the archive: {part}")
    first, last = int(match[1]), int(match[2])
    day = date.fromisoformat(part.parent.name.removeprefix("day="))
    where = (TABLE.c.id.between(first, last), *_on_day(engine, day))
    expected = pq.read_metadata(part).num_rows
    with engine.begin() as conn:
        present = conn.execute(select(func.count()).select_from(TABLE).where(*where)).scalar()
        if present == 0:
            return 0
        if present != expected:
            raise ArchiveError(
                f"{part} holds {expected} rows but the table has {present} of its id range "
                f"{first}-{last} on {day}; not deleting (check the file against the table)"
            )
        conn.execute(delete(TABLE).where(*where))
    return expected


def read_archive(root: Path) -> pa.Table:
    """Every archived row (for audits and tests)."""
    parts = sorted(root.glob("day=*/part-*.parquet"))
    return (
        pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
        if parts
        else SCHEMA.empty_table()
    )


def _on_day(engine: Engine, day: date) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """`created_at` within the UTC day."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return (
        TABLE.c.created_at >= _at(engine, start),
        TABLE.c.created_at < _at(engine, start + timedelta(days=1)),
    )


def _at(engine: Engine, moment: datetime) -> Any:
    """A whole-second bound for comparing with `created_at`. SQLite compares timestamps as
    text, and rows hold both `... 00:00:00` (its CURRENT_TIMESTAMP) and `... 00:00:00.000000`
    (SQLAlchemy's): a bound without the fraction sorts right against both."""
    if engine.dialect.name != "sqlite":
        return moment
    return literal(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), String)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive timestamps; they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@task(name="archive-predictions")
def archive_task(url: str, root: Path, cutoff: datetime, batch_rows: int) -> ArchiveReport:
    report = archive_predictions(get_engine(url), root, cutoff, batch_rows)
    get_run_logger().info(report.summary())
    return report


@flow(name="prepiq-archive", on_failure=[alert_on_failure])
def archive_flow(
    retention_days: int | None = None,
    source_url: str | None = None,
    data_dir: Path | None = None,
    batch_rows: int = 50_000,
    now: datetime | None = None,
) -> ArchiveReport:
    """Move `model_predictions` rows older than the retention period (default:
    PREPIQ_PREDICTION_RETENTION_DAYS) into Parquet under `data_dir/archive`."""
    settings = get_settings()
    days = settings.prediction_retention_days if retention_days is None else retention_days
    cutoff = cutoff_for(now or datetime.now(UTC), days)
    root = (data_dir or settings.data_dir) / ARCHIVE_DIR
    lock_dir = settings.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_dir / "archive.lock", timeout=0):
            return archive_task(
                source_url or settings.resolved_source_url, root, cutoff, batch_rows
            )
    except Timeout as exc:
        raise ArchiveError("another archive run is in progress (its lock is held)") from exc
