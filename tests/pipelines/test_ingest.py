"""The ingest flow through Prefect's real engine: full and incremental snapshots on SQLite
and PostgreSQL, deletes, point-in-time cuts, retries on dropped connections, an
unreachable source, atomic switching, and DVC seeing the change."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import Engine, text

from core.exceptions import SourceDataError, SourceUnavailableError
from features.snapshot import RAW_DIR, read_manifest
from features.versioning import dvc_hash
from pipelines.ingest import ingest_flow
from synthetic.generator import seed_source
from tests.conftest import END_DATE, migrated_engine
from tests.tcp_proxy import CuttableProxy

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def seeded(url: str, tmp_path: Path, students: int = 80) -> Engine:
    engine = migrated_engine(url)
    seed_source(
        engine, students=students, seed=5, days=90, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    return engine


def count(engine: Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table} {where}")).scalar_one())


def test_full_snapshot_holds_every_row(any_url: str, tmp_path: Path) -> None:
    engine = seeded(any_url, tmp_path)
    manifest = ingest_flow(source_url=any_url, data_dir=tmp_path / "data", as_of=AS_OF)
    for name, table in manifest.tables.items():
        assert table.rows == count(engine, name), name
        assert table.mode == "full"
        assert pq.read_metadata(tmp_path / "data" / RAW_DIR / table.file).num_rows == table.rows
    stored = read_manifest(tmp_path / "data" / RAW_DIR)
    assert stored is not None
    assert stored.content_hash == manifest.content_hash
    assert stored.tables["test_answers"].watermark is not None


def test_incremental_ingest_reads_only_changes_and_equals_a_full_one(
    any_url: str, tmp_path: Path
) -> None:
    engine = seeded(any_url, tmp_path)
    data = tmp_path / "data"
    ingest_flow(source_url=any_url, data_dir=data, as_of=AS_OF)
    with engine.begin() as conn:
        # An update, an insert and a delete, all stamped before the point in time.
        user = str(conn.execute(text("SELECT id FROM users ORDER BY email LIMIT 1")).scalar_one())
        conn.execute(text("UPDATE users SET display_name = 'Renamed' WHERE id = :u"), {"u": user})
        conn.execute(
            text("UPDATE users SET updated_at = :t WHERE id = :u"),
            {"u": user, "t": AS_OF - timedelta(minutes=1)},
        )
        rating = conn.execute(
            text("SELECT id FROM question_ratings ORDER BY id LIMIT 1")
        ).scalar_one()
        conn.execute(text("DELETE FROM question_ratings WHERE id = :i"), {"i": rating})
    second = ingest_flow(source_url=any_url, data_dir=data, as_of=AS_OF)
    users = second.tables["users"]
    assert users.mode == "incremental"
    assert users.rows_read == 1  # only the changed row travelled
    assert second.tables["question_ratings"].rows_deleted == 1
    assert second.tables["test_answers"].rows_read == 0
    renamed = pq.read_table(data / RAW_DIR / "users.parquet").to_pandas().set_index("id")
    assert renamed.loc[user, "display_name"] == "Renamed"
    full = ingest_flow(source_url=any_url, data_dir=tmp_path / "full", as_of=AS_OF, full=True)
    assert {n: t.content_hash for n, t in second.tables.items()} == {
        n: t.content_hash for n, t in full.tables.items()
    }


def test_as_of_cuts_the_snapshot_at_a_point_in_time(sqlite_url: str, tmp_path: Path) -> None:
    engine = seeded(sqlite_url, tmp_path)
    earlier = AS_OF - timedelta(days=30)
    manifest = ingest_flow(source_url=sqlite_url, data_dir=tmp_path / "data", as_of=earlier)
    expected = count(engine, "test_answers", f"WHERE created_at <= '{earlier:%Y-%m-%d %H:%M:%S}'")
    assert manifest.tables["test_answers"].rows == expected < count(engine, "test_answers")
    answers = pq.read_table(tmp_path / "data" / RAW_DIR / "test_answers.parquet").to_pandas()
    assert answers["answered_at"].max() <= earlier


def test_password_never_reaches_the_manifest(make_pg_database, tmp_path: Path) -> None:
    url = make_pg_database().replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    seeded(url, tmp_path, students=10)
    manifest = ingest_flow(source_url=url, data_dir=tmp_path / "data", as_of=AS_OF)
    assert "hunter2" not in manifest.source
    assert "hunter2" not in (tmp_path / "data" / RAW_DIR / "manifest.json").read_text()


def test_unreachable_source_names_host_and_keeps_the_previous_snapshot(
    sqlite_url: str, tmp_path: Path, fast_params: Path
) -> None:
    seeded(sqlite_url, tmp_path, students=10)
    data = tmp_path / "data"
    first = ingest_flow(source_url=sqlite_url, data_dir=data, as_of=AS_OF)
    with pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1:1/nowhere.*after 2 retries"):
        ingest_flow(
            source_url="postgresql://postgres@127.0.0.1:1/nowhere", data_dir=data, as_of=AS_OF
        )
    kept = read_manifest(data / RAW_DIR)
    assert kept is not None
    assert kept.content_hash == first.content_hash
    assert not list(data.glob(".raw.staging-*"))


@pytest.fixture
def flaky_proxy(pg_url: str) -> Iterator[tuple[CuttableProxy, str]]:
    """A proxy to the real PostgreSQL that drops its first two connections at once, and
    the URL through it."""
    proxy, through = CuttableProxy.before(pg_url, drops=2)
    with proxy:
        yield proxy, through


def test_dropped_connections_are_retried(
    pg_url: str, tmp_path: Path, fast_params: Path, flaky_proxy: tuple[CuttableProxy, str]
) -> None:
    proxy, through_proxy = flaky_proxy
    seeded(pg_url, tmp_path, students=10)
    manifest = ingest_flow(source_url=through_proxy, data_dir=tmp_path / "data", as_of=AS_OF)
    assert proxy.accepted > proxy.drops  # it was refused, retried, then got through
    assert manifest.tables["users"].rows == 10


def test_a_failure_mid_ingest_leaves_the_previous_snapshot(sqlite_url: str, tmp_path: Path) -> None:
    engine = seeded(sqlite_url, tmp_path, students=10)
    data = tmp_path / "data"
    first = ingest_flow(source_url=sqlite_url, data_dir=data, as_of=AS_OF)
    with engine.begin() as conn:  # SQLite lets text into a REAL column: unreadable
        conn.execute(
            text("UPDATE test_answers SET time_taken_seconds = 'not a number' WHERE id = 1")
        )
    with pytest.raises(SourceDataError, match="table test_answers: column time_taken_seconds"):
        ingest_flow(source_url=sqlite_url, data_dir=data, as_of=AS_OF, full=True)
    kept = read_manifest(data / RAW_DIR)
    assert kept is not None
    assert kept.content_hash == first.content_hash
    assert not list(data.glob(".raw.staging-*"))


def test_dvc_repro_keeps_the_snapshot_so_the_ingest_stays_incremental(
    sqlite_url: str, tmp_path: Path
) -> None:
    from core.config import PROJECT_ROOT

    dvc = str(PROJECT_ROOT / ".venv" / "bin" / "dvc")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(PROJECT_ROOT / "params.yaml", repo / "params.yaml")
    # History to yesterday: the stage's `prepiq ingest` snapshots as of now, and the gate
    # refuses stale data.
    engine = migrated_engine(sqlite_url)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    seed_source(engine, students=10, seed=5, days=90, end_date=yesterday, truth_dir=tmp_path / "t")
    first = ingest_flow(source_url=sqlite_url, data_dir=repo / "data")
    assert {t.mode for t in first.tables.values()} == {"full"}

    env = os.environ | {
        "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PREPIQ_SOURCE_URL": sqlite_url,
        "PREPIQ_DATA_DIR": str(repo / "data"),
        "PREPIQ_PARAMS_FILE": str(repo / "params.yaml"),
        # The session's Prefect server, which spares the command an ephemeral one's start.
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    subprocess.run([dvc, "repro", "-q", "ingest"], cwd=repo, env=env, check=True)
    # DVC left the snapshot in place for the stage's command, which read only changes
    # (none here) on top of it; dvc.lock records the result's hash.
    after = read_manifest(repo / "data" / RAW_DIR)
    assert after is not None
    # (A table that had no watermark yet, being empty, is read in full: it has no rows.)
    full = {name for name, table in after.tables.items() if table.mode == "full"}
    assert full == {name for name, table in first.tables.items() if table.watermark is None}
    assert len(full) < len(after.tables)
    assert sum(t.rows_read for t in after.tables.values()) == 0
    assert after.content_hash == first.content_hash
    assert dvc_hash(repo / "data" / RAW_DIR, repo_root=repo) in (repo / "dvc.lock").read_text()


def test_cli_ingest_reports_an_unreachable_source_in_one_line(
    capsys: pytest.CaptureFixture[str], fast_params: Path
) -> None:
    from prepiq.cli import main

    code = main(["ingest", "--url", "postgresql://postgres:s3cret-pw@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "127.0.0.1:1/x" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert "s3cret-pw" not in err


def test_a_cut_in_the_middle_of_a_test_keeps_the_test_with_its_first_answers(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = seeded(sqlite_url, tmp_path, students=20)
    with engine.connect() as conn:
        test_id, started, completed = conn.execute(
            text("SELECT id, started_at, completed_at FROM tests ORDER BY id DESC LIMIT 1")
        ).one()
    start = datetime.fromisoformat(str(started)).replace(tzinfo=UTC)
    end = datetime.fromisoformat(str(completed)).replace(tzinfo=UTC)
    cut = start + (end - start) / 2
    # The gate passes: the answers given so far have their test (no orphans).
    ingest_flow(source_url=sqlite_url, data_dir=tmp_path / "data", as_of=cut)
    answers = pq.read_table(tmp_path / "data" / RAW_DIR / "test_answers.parquet").to_pandas()
    tests = pq.read_table(tmp_path / "data" / RAW_DIR / "tests.parquet").to_pandas()
    mine = answers[answers["test_id"] == test_id]
    assert test_id in set(tests["id"])
    assert 0 < len(mine) < int(tests.loc[tests["id"] == test_id, "question_count"].iloc[0])
