"""Prometheus metrics of the platform's own database use, on the default registry (the
service's `/metrics` exposes them), and the slow-query watch that feeds them.

Every engine made by `core.database` times each statement with SQLAlchemy's cursor
events: all durations go into a histogram, and a statement slower than
`PREPIQ_SLOW_QUERY_SECONDS` is also logged (statement truncated, parameters left out:
they may hold students' data) and counted.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import Engine, event

from core.logging import get_logger

STATEMENT_CHARS = 500

QUERY_SECONDS = Histogram(
    "prepiq_db_query_duration_seconds",
    "Time each database statement took, by component (pipeline or service).",
    ["component"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SLOW_QUERIES = Counter(
    "prepiq_slow_queries_total",
    "Database statements slower than PREPIQ_SLOW_QUERY_SECONDS, by component.",
    ["component"],
)

_log = get_logger("prepiq.db.slow_query")
_component = "pipeline"


def set_component(name: str) -> None:
    """Name this process's part of the platform in the metrics (the service calls it with
    "service" at start-up; everything else counts as "pipeline")."""
    global _component
    _component = name


def component() -> str:
    """The `component` label this process's database metrics carry."""
    return _component


def watch_queries(engine: Engine, threshold_seconds: float) -> None:
    """Time every statement `engine` runs; log and count those slower than the threshold."""

    @event.listens_for(engine, "before_cursor_execute")
    def _start(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if context is not None:
            context._prepiq_started = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _stop(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, many: bool
    ) -> None:
        started = getattr(context, "_prepiq_started", None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        QUERY_SECONDS.labels(_component).observe(seconds)
        if seconds > threshold_seconds:
            SLOW_QUERIES.labels(_component).inc()
            _log.warning(
                "slow query",
                seconds=round(seconds, 4),
                threshold_seconds=threshold_seconds,
                component=_component,
                database=engine.url.database,
                statement=truncate(statement),
                executemany=many,
            )


def truncate(statement: str, limit: int = STATEMENT_CHARS) -> str:
    """One line of at most `limit` characters (long IN lists and JSON bodies are cut)."""
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
