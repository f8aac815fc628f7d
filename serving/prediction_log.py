"""Every prediction into `model_predictions`, without slowing the request: a request only
appends a row to an in-memory buffer; a writer thread inserts the buffer in batches
(every `serving_log_flush_seconds`, or sooner when `serving_log_batch_size` rows wait).
`close()` (the service's shutdown hook) writes what is left, so a shutdown loses nothing.
A failed insert keeps its rows for the next attempt."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from core.logging import get_logger
from features.schema import ModelPrediction

log = get_logger("prepiq.serving.prediction_log")
MAX_BUFFERED = 100_000  # rows kept while the database is down, before the oldest go


class PredictionLog:
    """Buffered, batched writer of `model_predictions` rows."""

    def __init__(self, engine: Engine, batch_size: int, flush_seconds: float) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(
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
        """Queue one row (O(1), never touches the database)."""
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(
            {
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
        )
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> int:
        """Write everything buffered now; returns rows written (0 if the insert failed)."""
        with self._write_lock:
            rows = [self._buffer.popleft() for _ in range(len(self._buffer))]
            if not rows:
                return 0
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(ModelPrediction), rows)
            except Exception as exc:  # keep the rows, in order, for the next attempt
                self._buffer.extendleft(reversed(rows))
                log.warning("prediction log write failed", rows=len(rows), error=str(exc))
                return 0
            self.written += len(rows)
            return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        if self._buffer:
            log.error("prediction log rows not written at shutdown", rows=len(self._buffer))
