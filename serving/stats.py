"""Live request counts and latency percentiles per model, for `/models/status`. Recording
is an append to a bounded deque (no lock: deque appends are atomic), so the status route
never waits behind inference."""

from __future__ import annotations

from collections import deque

import numpy as np

from serving.schemas import LatencyMs

WINDOW = 2048  # latencies kept per model: percentiles of the recent requests


class ModelStats:
    """Counts and recent latencies of one model."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies_ms: deque[float] = deque(maxlen=WINDOW)

    def record(self, latency_ms: float, ok: bool) -> None:
        self.requests += 1
        if ok:
            self.latencies_ms.append(latency_ms)
        else:
            self.errors += 1

    def percentiles(self) -> LatencyMs:
        recent = np.fromiter(tuple(self.latencies_ms), dtype=float)
        if recent.size == 0:
            return LatencyMs(p50=None, p95=None, p99=None)
        p50, p95, p99 = np.percentile(recent, [50, 95, 99])
        return LatencyMs(p50=round(p50, 2), p95=round(p95, 2), p99=round(p99, 2))
