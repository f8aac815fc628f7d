"""Requests that arrive while a model is busy run through it together.

The recommender's per-call cost is mostly fixed (pandas and scikit-learn overhead on a
few dozen rows: about 10 ms whether it ranks one student or twenty), so under load one
call for every queued request costs little more than one call for one. A request that
finds the model idle runs at once, alone: no waiting window, so nothing is added at low
load. Requests arriving during a run queue up; when the run ends, the first of them runs
the whole queue (up to `max_requests`) as one call.

Each request's rows must be one student's (one value of `group`, the column the model
groups its per-student steps by). In a batch each request's rows get a key of their own
in that column, so two requests for one student stay apart, and each request gets back
its own rows of the output, with its value put back. The model must treat students
independently (the tests check that a batch returns, bit for bit, what single calls
return). If a batch fails, its requests run one by one, so one bad input fails alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

Run = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass
class _Request:
    frame: pd.DataFrame
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set when the request is handed the next run
    result: pd.DataFrame | None = None
    error: BaseException | None = None

    def outcome(self) -> pd.DataFrame:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class BusyBatcher:
    """Runs `run` on request frames, those that queue while it is busy in one call."""

    def __init__(self, run: Run, group: str = "user_id", max_requests: int = 32) -> None:
        self.run = run
        self.group = group
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False
        self.calls = 0  # model calls made
        self.requests = 0  # requests answered

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`run(frame)`'s output for this request (from a shared call under load)."""
        if self.group not in frame or frame[self.group].nunique() != 1:
            return self.run(frame)  # not one student's rows: alone, as given
        request = _Request(frame)
        with self._lock:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            request.done.wait()
        if lead or request.lead:
            self._run_queue()
        return request.outcome()

    def _run_queue(self) -> None:
        """Run the queue's first `max_requests` (the caller's among them), then hand the
        next run to the first request still queued, or mark the model idle."""
        with self._lock:
            batch = self._queue[: self.max_requests]
            del self._queue[: self.max_requests]
        try:
            self._answer(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._busy = False
            for request in batch:
                request.done.set()

    def _answer(self, batch: list[_Request]) -> None:
        self.calls += 1
        self.requests += len(batch)
        if len(batch) > 1:
            try:
                self._answer_together(batch)
                return
            except Exception:  # each request is then answered (or fails) alone
                pass
        for request in batch:
            try:
                request.result = self.run(request.frame)
            except Exception as exc:  # raised in the request's own thread
                request.error = exc

    def _answer_together(self, batch: list[_Request]) -> None:
        keys = [f"batch-{number}" for number in range(len(batch))]
        parts = [r.frame.assign(**{self.group: key}) for r, key in zip(batch, keys, strict=True)]
        out = self.run(pd.concat(parts, ignore_index=True))
        for request, key in zip(batch, keys, strict=True):
            mine = out[out[self.group] == key].reset_index(drop=True)
            mine[self.group] = request.frame[self.group].iloc[0]
            request.result = mine
