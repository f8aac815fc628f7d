"""Every prediction into `model_predictions`, durably and without a database insert on the
request path.

With a spool (the default, `PREPIQ_SERVING_SPOOL_DIR`): `record` hands the row to a
group-commit thread that appends it to this process's spool segment and fsyncs; the
request's answer waits for that fsync (an asyncio future, so the event loop stays free).
Rows arriving while one fsync runs share the next one, so under load many requests pay
for one fsync. Durable rows then go to an in-memory buffer; a writer thread inserts the
buffer in batches (every `serving_log_flush_seconds`, or sooner when
`serving_log_batch_size` rows wait) and removes a spool segment once every row of it is
committed. Inserts are idempotent (`ON CONFLICT DO NOTHING` on the unique
request_id/model_name/created_at index), so a row written twice (a replay after a crash
between the insert and the segment's removal) is stored once.

After `kill -9` the segments stay on disk: the next process (or a live sibling worker)
replays every spool whose owner is gone. Ownership is an exclusive `flock` on the owner's
`.lock` file, which the kernel releases when the process dies, whatever its pid becomes.

While inserts fail the writer backs off exponentially (capped, with jitter) and logs once
per interval. Bounded losses are counted (`dropped`, on `/metrics` and `/models/status`):
without a spool, a full memory buffer drops its oldest rows; with one, a full spool
(`serving_spool_max_bytes`) drops new rows. A full memory buffer with a spool loses
nothing: the rows stay on disk and are replayed from there once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.logging import get_logger
from features.schema import ModelPrediction
from serving import metrics

log = get_logger("prepiq.serving.prediction_log")
MAX_BUFFERED = 100_000  # rows kept in memory while the database is down
SEGMENT_ROWS = 10_000  # rows per spool segment before the next one starts
REPLAY_BATCH = 1_000
ORPHAN_SCAN_SECONDS = 30.0  # how often the writer looks for spools of dead workers
LOG_INTERVAL_SECONDS = 30.0  # at most one warning per kind per interval
RETRY_BASE_SECONDS = 0.5


def insert_predictions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert `rows`, skipping any already stored (same request id, model and time)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql_insert(ModelPrediction).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        conn.execute(sqlite_insert(ModelPrediction).on_conflict_do_nothing(), rows)
    else:  # no portable upsert: plain insert (a replay may then fail on the unique index)
        conn.execute(insert(ModelPrediction), rows)


def retry_delay(failures: int, cap: float) -> float:
    """Seconds to wait after `failures` consecutive failed inserts: exponential from
    RETRY_BASE_SECONDS, capped at `cap`, with "equal jitter" (half fixed, half random) so
    workers that failed together do not retry together."""
    ceiling = min(cap, RETRY_BASE_SECONDS * 2 ** min(failures - 1, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class _Throttled:
    """A warning logged at most once per interval, with what happened in between."""

    def __init__(self, event: str, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.event = event
        self.interval = interval
        self.count = 0
        self._last = -interval

    def hit(self, n: int = 1, **fields: Any) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.warning(self.event, count_since_last_log=self.count, **fields)
            self.count = 0
            self._last = now


@dataclass
class _Segment:
    path: Path
    rows: int = 0  # durable rows in the file
    committed: int = 0  # of those, inserted by this process's writer
    bytes: int = 0
    closed: bool = False
    overflow: bool = False  # some rows were not buffered in memory: replay from disk


def _row_to_line(row: dict[str, Any]) -> bytes:
    doc = {**row, "created_at": row["created_at"].isoformat()}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def read_spool(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a spool segment. A torn last line (the process died inside a write,
    before its fsync, so its request was never answered) is skipped."""
    with path.open("rb") as handle:
        for line in handle:
            try:
                doc = json.loads(line)
                doc["created_at"] = datetime.fromisoformat(doc["created_at"])
            except (ValueError, KeyError, TypeError):
                continue
            yield doc


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Spool:
    """This process's append-only spool: numbered segment files `<owner>-<n>.spool` and
    the `<owner>.lock` file it holds an exclusive lock on while alive. Thread-safe."""

    def __init__(self, folder: Path, max_bytes: int, segment_rows: int = SEGMENT_ROWS) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_rows = segment_rows
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock_file: IO[bytes] = (folder / f"{self.owner}.lock").open("wb")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._current: int | None = None
        self._fd: int | None = None
        self._next = 0

    def append(self, rows: list[dict[str, Any]]) -> int | None:
        """Write `rows` and fsync them; their segment number, or None when the spool is
        full (nothing written). OSError when the disk refuses."""
        data = b"".join(_row_to_line(r) for r in rows)
        with self._lock:
            if self.size() + len(data) > self.max_bytes:
                return None
            if self._current is None:
                self._open()
            assert self._fd is not None and self._current is not None
            os.write(self._fd, data)
            os.fdatasync(self._fd)
            segment = self._segments[self._current]
            segment.rows += len(rows)
            segment.bytes += len(data)
            seq = self._current
            if segment.rows >= self.segment_rows:
                self._close_current()
            return seq

    def _open(self) -> None:
        seq = self._next
        self._next += 1
        path = self.folder / f"{self.owner}-{seq:08d}.spool"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # The new file's directory entry must survive a crash too.
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._segments[seq] = _Segment(path)
        self._current = seq

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._current is not None:
            self._segments[self._current].closed = True
        self._fd = None
        self._current = None

    def size(self) -> int:
        return sum(s.bytes for s in self._segments.values())

    def mark_overflow(self, seq: int) -> None:
        with self._lock:
            if seq in self._segments:
                self._segments[seq].overflow = True

    def committed(self, counts: dict[int, int], buffer_empty: bool) -> None:
        """Count rows inserted per segment; remove every segment whose rows are all in the
        database. With the buffer empty the open segment is closed first when it is all
        committed, so a quiet spool holds no file."""
        with self._lock:
            for seq, n in counts.items():
                if seq in self._segments:  # else replayed from its file and removed
                    self._segments[seq].committed += n
            current = self._segments.get(self._current) if self._current is not None else None
            if buffer_empty and current is not None and current.committed >= current.rows:
                self._close_current()
            for seq, segment in list(self._segments.items()):
                if segment.closed and not segment.overflow and segment.committed >= segment.rows:
                    segment.path.unlink(missing_ok=True)
                    del self._segments[seq]

    def take_overflowed(self) -> list[Path]:
        """Close and hand over the segments with rows only on disk (to be replayed from
        the file, then removed with `forget`)."""
        with self._lock:
            if self._current is not None and self._segments[self._current].overflow:
                self._close_current()
            return [s.path for s in self._segments.values() if s.closed and s.overflow]

    def forget(self, path: Path) -> None:
        with self._lock:
            for seq, segment in list(self._segments.items()):
                if segment.path == path:
                    path.unlink(missing_ok=True)
                    del self._segments[seq]

    def unwritten_rows(self) -> int:
        """Durable rows not yet known to be in the database."""
        with self._lock:
            return sum(max(0, s.rows - s.committed) for s in self._segments.values())

    def dead_owners(self) -> Iterator[tuple[str, IO[bytes]]]:
        """Each spool owner that no live process holds, locked for the caller while it
        replays (the lock is released and its file removed after each step)."""
        for lock_path in sorted(self.folder.glob("*.lock")):
            owner = lock_path.stem
            if owner == self.owner:
                continue
            try:
                handle = lock_path.open("rb")
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive
                handle.close()
                continue
            try:
                yield owner, handle
            finally:
                handle.close()

    def segments_of(self, owner: str) -> list[Path]:
        return sorted(self.folder.glob(f"{owner}-*.spool"))

    def close(self, remove: bool) -> None:
        """Close the open segment; remove the lock file when nothing is left to replay."""
        with self._lock:
            self._close_current()
            if remove and not self._segments:
                (self.folder / f"{self.owner}.lock").unlink(missing_ok=True)
            self._lock_file.close()


@dataclass(frozen=True)
class LogStatus:
    written: int
    pending: int
    spooled: int
    dropped: int
    replayed: int
    last_error: str | None


class PredictionLog:
    """Durable (with a spool), buffered, batched writer of `model_predictions` rows."""

    def __init__(
        self,
        engine: Engine,
        batch_size: int,
        flush_seconds: float,
        spool: Spool | None = None,
        retry_max_seconds: float = 30.0,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.spool = spool
        self.retry_max_seconds = retry_max_seconds
        self.max_buffered = max_buffered
        # (row, spool segment or None) in arrival order
        self._buffer: deque[tuple[dict[str, Any], int | None]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._commit_cond = threading.Condition()
        self._commit_queue: list[tuple[dict[str, Any], asyncio.Future[None], Any]] = []
        self._closing = False
        self.dropped = 0
        self.written = 0
        self.replayed = 0
        self.failures = 0  # consecutive failed inserts
        self.last_error: str | None = None
        self._failed_log = _Throttled("prediction log write failed; retrying with backoff")
        self._dropped_log = _Throttled("prediction log rows dropped")
        self._spool_log = _Throttled("prediction spool write failed; rows kept in memory only")
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        self._committer: threading.Thread | None = None
        if spool is not None:
            self._committer = threading.Thread(
                target=self._commit_loop, name="prediction-spool", daemon=True
            )
            self._committer.start()

    async def record(
        self,
        *,
        model_name: str,
        model_version: str,
        user_id: str | None,
        request_id: str,
        inputs_digest: str,
        request: dict[str, Any],
        response: dict[str, Any],
        latency_ms: float,
    ) -> None:
        """Log one row; with a spool, return once it is on disk (fsynced)."""
        row = {
            "model_name": model_name,
            "model_version": model_version,
            "user_id": user_id,
            "request_id": request_id,
            "inputs_digest": inputs_digest,
            "request": request,
            "response": response,
            "latency_ms": latency_ms,
            "created_at": datetime.now(UTC),
        }
        if self.spool is None or self._closing:
            self._buffer_rows([row], None)
            return
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        with self._commit_cond:
            self._commit_queue.append((row, durable, loop))
            self._commit_cond.notify()
        # Shielded: a request cancelled by its timeout still has its row written.
        await asyncio.shield(durable)

    def _commit_loop(self) -> None:
        """Group commit: every row queued while the last fsync ran shares the next one."""
        assert self.spool is not None
        while True:
            with self._commit_cond:
                while not self._commit_queue and not self._closing:
                    self._commit_cond.wait()
                if not self._commit_queue:
                    return
                batch, self._commit_queue = self._commit_queue, []
            rows = [row for row, _, _ in batch]
            try:
                seq = self.spool.append(rows)
                if seq is None:
                    self._drop(len(rows), "spool full")
                else:
                    self._buffer_rows(rows, seq)
            except Exception as exc:  # a failing disk, or a row it cannot encode
                self._spool_log.hit(len(rows), error=f"{type(exc).__name__}: {exc}")
                self._buffer_rows(rows, None)
            finally:  # whatever happened, the waiting answers go (this thread lives on)
                _release(batch)

    def _buffer_rows(self, rows: list[dict[str, Any]], seq: int | None) -> None:
        for row in rows:
            if len(self._buffer) < self.max_buffered:
                self._buffer.append((row, seq))
            elif seq is not None:  # on disk: replayed from the file once the database is back
                assert self.spool is not None
                self.spool.mark_overflow(seq)
            else:
                _, oldest_seq = self._buffer.popleft()
                if oldest_seq is not None and self.spool is not None:
                    self.spool.mark_overflow(oldest_seq)
                else:
                    self._drop(1, "memory buffer full")
                self._buffer.append((row, seq))
        if len(self._buffer) >= self.batch_size and not self.failures:
            self._wake.set()

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        metrics.record_log_rows("dropped", n)
        self._dropped_log.hit(n, reason=why, dropped_total=self.dropped)

    @property
    def pending(self) -> int:
        """Rows in memory waiting for the database."""
        return len(self._buffer)

    def status(self) -> LogStatus:
        return LogStatus(
            written=self.written,
            pending=self.pending,
            spooled=self.spool.unwritten_rows() if self.spool is not None else 0,
            dropped=self.dropped,
            replayed=self.replayed,
            last_error=self.last_error,
        )

    def flush(self) -> int:
        """Write everything buffered now; returns rows written (0 if the insert failed)."""
        with self._write_lock:
            taken = [self._buffer.popleft() for _ in range(len(self._buffer))]
            if not taken:
                self._settle_spool({})
                return 0
            try:
                with self.engine.begin() as conn:
                    for batch in _batches((row for row, _ in taken), REPLAY_BATCH):
                        insert_predictions(conn, batch)
            except Exception as exc:  # keep the rows, in order, for the next attempt
                self._buffer.extendleft(reversed(taken))
                self._failed(exc, len(taken))
                return 0
            self._succeeded()
            self.written += len(taken)
            metrics.record_log_rows("written", len(taken))
            counts: dict[int, int] = {}
            for _, seq in taken:
                if seq is not None:
                    counts[seq] = counts.get(seq, 0) + 1
            self._settle_spool(counts)
            return len(taken)

    def _settle_spool(self, counts: dict[int, int]) -> None:
        """Remove committed segments; once memory is drained, replay overflowed ones."""
        if self.spool is None:
            return
        self.spool.committed(counts, buffer_empty=not self._buffer)
        if self._buffer:
            return
        for path in self.spool.take_overflowed():
            try:
                self.replayed += self._replay_file(path)
            except Exception as exc:
                self._failed(exc, 0)
                return
            self.spool.forget(path)

    def _failed(self, exc: Exception, rows: int) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        metrics.record_log_failure()
        self._failed_log.hit(rows=rows, consecutive_failures=self.failures, error=self.last_error)

    def _succeeded(self) -> None:
        if self.failures:
            log.info("prediction log writes again", after_failures=self.failures)
        self.failures = 0
        self.last_error = None

    def _replay_file(self, path: Path) -> int:
        """Insert a spool segment's rows (idempotently); returns rows read."""
        rows = 0
        with self.engine.begin() as conn:
            for batch in _batches(read_spool(path), REPLAY_BATCH):
                insert_predictions(conn, batch)
                rows += len(batch)
        return rows

    def replay_orphans(self) -> int:
        """Replay into the database every spool whose process is gone (this worker's
        predecessor after a crash, or a dead sibling), removing each segment once its
        rows are committed. Returns rows replayed; raises when the database fails (what
        was not replayed stays for the next attempt)."""
        if self.spool is None:
            return 0
        total = 0
        for owner, _ in self.spool.dead_owners():
            for path in self.spool.segments_of(owner):
                rows = self._replay_file(path)
                path.unlink(missing_ok=True)
                total += rows
                log.info("replayed a dead worker's prediction spool", file=path.name, rows=rows)
            (self.spool.folder / f"{owner}.lock").unlink(missing_ok=True)
        if total:
            self.replayed += total
            metrics.record_log_rows("replayed", total)
        return total

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            if self.spool is not None and time.monotonic() >= next_scan:
                try:
                    self.replay_orphans()
                    next_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
                except Exception as exc:  # the database is down: retried after the backoff
                    self._failed(exc, 0)
            if self.failures:  # back off; new rows do not cut the wait short
                self._stop.wait(retry_delay(self.failures, self.retry_max_seconds))
            else:
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
            if not self._stop.is_set():  # else close() writes the rest
                self.flush()
            metrics.set_log_pending(self.pending)

    def close(self) -> None:
        """Stop taking rows, stop the writer and write what is left. Rows the database
        did not take stay in the spool for the next start."""
        with self._commit_cond:
            self._closing = True
            self._commit_cond.notify()
        if self._committer is not None:
            self._committer.join(timeout=30)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        if self.spool is not None:
            self.spool.close(remove=not self._buffer)
        if self._buffer:
            log.error(
                "prediction log rows not written at shutdown",
                rows=len(self._buffer),
                kept_in_spool=self.spool is not None,
            )


def _release(batch: list[tuple[dict[str, Any], asyncio.Future[None], Any]]) -> None:
    """Resolve each queued row's future on its own event loop."""
    by_loop: dict[Any, list[asyncio.Future[None]]] = {}
    for _, future, loop in batch:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
