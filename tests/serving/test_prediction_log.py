"""The prediction log (serving.prediction_log) on its own: rows fsynced to the spool before
`record` returns, a spool left by a process killed with SIGKILL replayed exactly once,
idempotent inserts on SQLite and PostgreSQL, backoff while the database is down, and
every bounded loss counted."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from core.config import PROJECT_ROOT
from core.database import get_engine
from features.schema import ModelPrediction
from serving import prediction_log
from serving.prediction_log import PredictionLog, Spool, insert_predictions, retry_delay
from tests.conftest import migrated_engine
from tests.tcp_proxy import CuttableProxy


def _fields(request_id: str) -> dict[str, Any]:
    return {
        "model_name": "prepiq-focus-area",
        "model_version": "1",
        "user_id": None,
        "request_id": request_id,
        "inputs_digest": "0" * 64,
        "request": {"n": request_id},
        "response": {"ok": True},
        "latency_ms": 1.0,
    }


def _record(log: PredictionLog, ids: list[str]) -> None:
    async def all_of_them() -> None:
        await asyncio.gather(*(log.record(**_fields(i)) for i in ids))

    asyncio.run(all_of_them())


def _stored(engine: Engine) -> dict[str, int]:
    table = ModelPrediction.__table__
    query = select(table.c.request_id, func.count()).group_by(table.c.request_id)
    with engine.connect() as conn:
        return {str(r[0]): int(r[1]) for r in conn.execute(query)}


@pytest.fixture
def opened() -> Iterator[Callable[..., PredictionLog]]:
    """`PredictionLog(...)` for a test; each is closed at the end even when an assertion
    failed (its writer and committer threads stop, its spool lock goes)."""
    logs: list[PredictionLog] = []

    def make(*args: Any, **kwargs: Any) -> PredictionLog:
        logs.append(PredictionLog(*args, **kwargs))
        return logs[-1]

    yield make
    for log in logs:
        log.close()  # again for a closed one: only its (empty) flush runs again


def _broken(tmp_path: Path) -> Engine:
    """A database that refuses every insert (no such table)."""
    return get_engine(f"sqlite:///{tmp_path / 'down' / 'no-tables.db'}")


def test_a_spool_left_by_a_killed_process_is_replayed_exactly_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    # A process records 50 rows (each returned only once fsynced) while the database is
    # down, then dies by SIGKILL: no shutdown hook runs.
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from core.database import get_engine
        from serving.prediction_log import PredictionLog, Spool
        from tests.serving.test_prediction_log import _fields
        log = PredictionLog(
            get_engine("sqlite:///{tmp_path / "down" / "none.db"}"), 10, 3600,
            spool=Spool(Path("{spool_dir}"), 1 << 30, segment_rows=20),
        )
        async def main():
            await asyncio.gather(*(log.record(**_fields(f"k{{i}}")) for i in range(50)))
            print("answered", flush=True)
        asyncio.run(main())
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9 and "answered" in done.stdout, done.stderr
    assert list(spool_dir.glob("*.spool"))  # the rows are on disk

    engine = migrated_engine(f"sqlite:///{tmp_path / 'source.db'}")
    live = PredictionLog(engine, 1000, 3600, spool=Spool(spool_dir, 1 << 30))
    try:
        # The writer replays dead owners' spools as it starts.
        deadline = time.monotonic() + 30
        while live.status().replayed < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(engine) == {f"k{i}": 1 for i in range(50)}
        assert list(spool_dir.glob("*.spool")) == []  # removed once committed
        assert live.replay_orphans() == 0
        assert live.status().replayed == 50
    finally:
        live.close()
    assert list(spool_dir.iterdir()) == []  # a clean shutdown leaves nothing


def test_a_live_processes_spool_is_not_replayed_by_another(
    tmp_path: Path, opened: Callable[..., PredictionLog]
) -> None:
    engine = migrated_engine(f"sqlite:///{tmp_path / 'source.db'}")
    spool_dir = tmp_path / "spool"
    first = opened(_broken(tmp_path), 1000, 3600, spool=Spool(spool_dir, 1 << 30))
    _record(first, ["a", "b"])
    second = opened(engine, 1000, 3600, spool=Spool(spool_dir, 1 << 30))
    try:
        assert second.replay_orphans() == 0  # `first` still holds its lock
        assert first.status().spooled == 2
        first.engine = engine
        first.close()  # writes its rows and removes its files
        assert _stored(engine) == {"a": 1, "b": 1}
    finally:
        second.close()
    assert list(spool_dir.iterdir()) == []


def test_inserting_the_same_rows_twice_stores_them_once(any_url: str) -> None:
    from datetime import UTC, datetime

    engine = migrated_engine(any_url)
    at = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [{**_fields(f"r{i}"), "created_at": at} for i in range(3)]
    # The dashboard asks three models under one request id: three rows, all kept.
    rows += [{**_fields("r0"), "model_name": m, "created_at": at} for m in ("a", "b")]
    for _ in range(2):
        with engine.begin() as conn:
            insert_predictions(conn, rows)
    assert _stored(engine) == {"r0": 3, "r1": 1, "r2": 1}


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    random.seed(20261207)  # the jitter's draws, reproducible
    for failures in range(1, 40):
        ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
        delays = [retry_delay(failures, 30.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert retry_delay(3, 30.0) > retry_delay(1, 30.0)


def test_the_writer_backs_off_while_the_database_is_down(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real PostgreSQL, refusing connections behind a cut proxy. Every failed insert is
    followed by one backoff wait, growing with the consecutive failures: 200 new rows (each
    a wake-up, at a batch size of 1) add no attempts. The delays are the writer's own,
    shortened 20-fold so the test waits for behaviour, not for a clock."""
    migrated_engine(pg_url)
    asked: list[int] = []

    def recorded(failures: int, cap: float) -> float:
        asked.append(failures)
        return retry_delay(failures, cap) / 20

    monkeypatch.setattr(prediction_log, "retry_delay", recorded)
    proxy, proxied = CuttableProxy.before(pg_url)
    with proxy:
        proxy.cut()
        log = PredictionLog(get_engine(proxied), batch_size=1, flush_seconds=0.01)
        try:
            for i in range(200):
                _record(log, [f"w{i}"])
            deadline = time.monotonic() + 60
            while len(asked) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            failures, waits = log.failures, list(asked)
            assert waits[:4] == [1, 2, 3, 4], waits  # one wait per failure, growing
            assert failures in (len(waits), len(waits) + 1)  # no attempt without a wait
            status = log.status()
            assert status.pending == 200 and status.written == 0 and status.dropped == 0
            assert status.last_error is not None and "OperationalError" in status.last_error
        finally:
            proxy.restore()
            log.close()
    assert log.written == 200 and log.status().last_error is None
    assert len(_stored(get_engine(pg_url))) == 200


def test_a_full_memory_buffer_without_a_spool_counts_what_it_drops(
    tmp_path: Path, opened: Callable[..., PredictionLog]
) -> None:
    log = opened(_broken(tmp_path), 1000, 3600, max_buffered=3)
    _record(log, [f"d{i}" for i in range(5)])
    assert log.status().dropped == 2 and log.pending == 3
    engine = migrated_engine(f"sqlite:///{tmp_path / 'source.db'}")
    log.engine = engine
    log.close()
    assert _stored(engine) == {"d2": 1, "d3": 1, "d4": 1}  # the oldest went


def test_with_a_spool_a_full_memory_buffer_loses_nothing(
    tmp_path: Path, opened: Callable[..., PredictionLog]
) -> None:
    spool_dir = tmp_path / "spool"
    log = opened(_broken(tmp_path), 1000, 3600, spool=Spool(spool_dir, 1 << 30), max_buffered=2)
    _record(log, [f"o{i}" for i in range(5)])
    assert log.status().dropped == 0 and log.pending == 2 and log.status().spooled == 5
    engine = migrated_engine(f"sqlite:///{tmp_path / 'source.db'}")
    log.engine = engine
    assert log.flush() == 2  # the buffered rows, then the rest from the spool file
    assert _stored(engine) == {f"o{i}": 1 for i in range(5)}
    assert log.status().spooled == 0 and list(spool_dir.glob("*.spool")) == []
    log.close()


def test_a_full_spool_counts_what_it_drops(
    tmp_path: Path, opened: Callable[..., PredictionLog]
) -> None:
    log = opened(_broken(tmp_path), 1000, 3600, spool=Spool(tmp_path / "spool", max_bytes=1500))
    _record(log, [f"f{i}" for i in range(10)])  # about 300 bytes a row
    status = log.status()
    assert status.dropped > 0 and status.spooled + status.dropped == 10
    log.close()


def test_a_row_the_spool_cannot_encode_is_answered_and_kept_in_memory(
    tmp_path: Path, opened: Callable[..., PredictionLog]
) -> None:
    """The group-commit thread survives a row it cannot write: the request is answered
    (not left waiting for its timeout), the row stays in memory, and later rows are
    spooled as before."""
    log = opened(_broken(tmp_path), 1000, 3600, spool=Spool(tmp_path / "spool", 1 << 30))
    try:

        async def both() -> None:
            bad = _fields("unencodable") | {"response": {"seen": {1, 2}}}  # a set: no JSON
            await asyncio.wait_for(log.record(**bad), timeout=30)
            await asyncio.wait_for(log.record(**_fields("fine")), timeout=30)

        asyncio.run(both())
        assert log.pending == 2
        assert log.status().spooled == 1  # only the encodable row reached the disk
        assert log.dropped == 0
    finally:
        log.close()
