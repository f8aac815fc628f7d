"""Ingest speed and memory on PostgreSQL: the platform's streaming reader (COPY parsed by
Arrow in bounded chunks, written to Parquet) against a plain `pandas.read_sql` of the same
tables, in the same run, each in its own process so peak memory is its own.

Usage: python benchmarks/ingest.py [--students 100000] [--url postgresql+psycopg://.../db]
Without --url a throwaway database on the local server is created, seeded, and dropped.
Prints JSON: rows/s and peak resident memory per method, and the ratio between them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
TABLES = ("test_answers", "study_activity", "user_progress", "tests", "users")

STREAMING = """
import json, resource, sys, tempfile, time
from datetime import UTC, datetime
from pathlib import Path
from core.database import get_engine
from features.extract import table_spec
from features.snapshot import ingest_table
url, table = sys.argv[1], sys.argv[2]
spec = table_spec(table)
engine = get_engine(url)
with tempfile.TemporaryDirectory() as tmp:
    started = time.perf_counter()
    result = ingest_table(engine, spec, Path(tmp), None, None, as_of=datetime.now(UTC), started=datetime.now(UTC))
    seconds = time.perf_counter() - started
print(json.dumps({"rows": result.rows, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

READ_SQL = """
import json, resource, sys, time
import pandas as pd
from sqlalchemy import create_engine
url, table = sys.argv[1], sys.argv[2]
engine = create_engine(url)
started = time.perf_counter()
frame = pd.read_sql(f"SELECT * FROM {table}", engine)
seconds = time.perf_counter() - started
print(json.dumps({"rows": len(frame), "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


MEMORY_CAP_GB = 16  # of the machine's 24: a method that needs more fails instead of swapping


def _cap_memory() -> None:
    cap = MEMORY_CAP_GB * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def measure(code: str, url: str, table: str) -> dict[str, float | str]:
    out = subprocess.run(
        [sys.executable, "-c", code, url, table],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_cap_memory,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"failed under a {MEMORY_CAP_GB} GB memory cap: {last}"}
    result: dict[str, float | str] = json.loads(out.stdout.strip().splitlines()[-1])
    rows, seconds = float(result["rows"]), float(result["seconds"])
    result["rows_per_second"] = round(rows / seconds)
    result["seconds"] = round(seconds, 2)
    result["peak_rss_mb"] = round(float(result["peak_rss_mb"]), 1)
    return result


def seed(url: str, students: int) -> float:
    started = time.perf_counter()
    code = (
        "import sys; from datetime import date; from pathlib import Path; import tempfile;"
        "from core.database import get_engine; from features.migrate import upgrade;"
        "from synthetic.generator import seed_source;"
        "e = get_engine(sys.argv[1]); upgrade(e);"
        "seed_source(e, students=int(sys.argv[2]), seed=42, end_date=date.fromisoformat(sys.argv[3]),"
        " truth_dir=Path(tempfile.mkdtemp()) / 'truth')"
    )
    # History ending yesterday, as `prepiq seed` does: every row lies before the read.
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    subprocess.run([sys.executable, "-c", code, url, str(students), yesterday], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument("--url", help="an already seeded PostgreSQL source (kept as is)")
    args = parser.parse_args()
    import psycopg

    url, created = args.url, None
    results: dict[str, object] = {"benchmark": "ingest", "backend": "postgresql"}
    if url is None:
        created = f"prepiq_bench_ingest_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(SERVER.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {created}")
        url = f"{SERVER}/{created}"
        results["seed_seconds"] = round(seed(url, args.students), 1)
        results["students"] = args.students
    try:
        per_table = {}
        for table in TABLES:
            per_table[table] = {
                "streaming": measure(STREAMING, url, table),
                "pandas_read_sql": measure(READ_SQL, url, table),
            }
        results["tables"] = per_table
        for method in ("streaming", "pandas_read_sql"):
            done = [t[method] for t in per_table.values() if "error" not in t[method]]
            rows = sum(float(r["rows"]) for r in done)
            seconds = sum(float(r["seconds"]) for r in done)
            results[f"{method}_rows_per_second"] = round(rows / seconds) if seconds else None
            results[f"{method}_tables_completed"] = len(done)
        both = [
            t
            for t in per_table.values()
            if "error" not in t["streaming"] and "error" not in t["pandas_read_sql"]
        ]
        if both:
            results["speedup_on_tables_both_completed"] = round(
                sum(float(t["pandas_read_sql"]["seconds"]) for t in both)
                / sum(float(t["streaming"]["seconds"]) for t in both),
                2,
            )
        results["test_answers_peak_rss_mb"] = {
            method: per_table["test_answers"][method].get(
                "peak_rss_mb", per_table["test_answers"][method].get("error")
            )
            for method in ("streaming", "pandas_read_sql")
        }
    finally:
        if created:
            with psycopg.connect(
                SERVER.replace("+psycopg", "") + "/postgres", autocommit=True
            ) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {created} WITH (FORCE)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
