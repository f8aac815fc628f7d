"""Slow-query watch on the shared engines: every statement lands in the duration
histogram; one slower than PREPIQ_SLOW_QUERY_SECONDS is also logged (statement, duration)
and counted. On SQLite a threshold of 0 makes every statement slow; on the real
PostgreSQL a `pg_sleep` is slow against a threshold that quick statements stay under."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from core.config import Settings
from core.database import get_engine
from core.metrics import component, truncate


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"component": component()}) or 0.0


def slow_logs(err: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "slow query"]


def test_with_a_zero_threshold_every_statement_is_logged_and_counted(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = get_engine(sqlite_url, Settings(slow_query_seconds=0))
    slow, timed = (
        sample("prepiq_slow_queries_total"),
        sample("prepiq_db_query_duration_seconds_count"),
    )
    capsys.readouterr()
    with engine.connect() as conn:
        conn.execute(text("SELECT 42 AS answer"))
    assert sample("prepiq_slow_queries_total") == slow + 1
    assert sample("prepiq_db_query_duration_seconds_count") == timed + 1
    (logged,) = slow_logs(capsys.readouterr().err)
    assert logged["statement"] == "SELECT 42 AS answer"
    assert logged["component"] == component()  # "service" once an in-process service ran


def test_a_slow_postgres_query_is_logged_and_quick_ones_are_not(
    make_pg_database: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = get_engine(make_pg_database(), Settings(slow_query_seconds=1.0))
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # the first connection's own statements come first
    slow = sample("prepiq_slow_queries_total")
    capsys.readouterr()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT pg_sleep(1.2)"))
    assert sample("prepiq_slow_queries_total") == slow + 1
    (logged,) = slow_logs(capsys.readouterr().err)
    assert logged["statement"] == "SELECT pg_sleep(1.2)"


def test_long_statements_are_cut_to_one_line() -> None:
    statement = "SELECT *\n  FROM model_predictions\n WHERE id IN (" + ", ".join(["1"] * 500) + ")"
    cut = truncate(statement)
    assert len(cut) == 500 and cut.endswith("...") and "\n" not in cut
    assert truncate("SELECT 1") == "SELECT 1"
