"""How `prepiq seed` scales: time, rows/s and peak memory for 2,000 and 20,000 students,
each in its own process on a fresh SQLite file (and optionally on PostgreSQL), printed
as JSON. Usage: python benchmarks/seed.py [--sizes 2000 20000] [--postgres URL_BASE]"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from datetime import date
from pathlib import Path
from core.database import get_engine
from features.migrate import upgrade
from synthetic.generator import seed_source
url, students, truth = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
engine = get_engine(url)
upgrade(engine)
started = time.perf_counter()
summary = seed_source(engine, students=students, seed=42, end_date=date(2026, 11, 20), truth_dir=truth)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": sum(summary.rows.values()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_one(url: str, students: int, truth: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(students), str(truth)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    measured["rows_per_second"] = round(measured["rows"] / measured["seconds"])
    measured["seconds_per_1000_students"] = round(1000 * measured["seconds"] / students, 2)
    measured["seconds"] = round(measured["seconds"], 2)
    measured["peak_rss_mb"] = round(measured["peak_rss_mb"], 1)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument(
        "--postgres", help="server URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432"
    )
    args = parser.parse_args()
    results: dict[str, object] = {
        "benchmark": "seed",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for students in args.sizes:
            url = f"sqlite:///{Path(tmp) / f'seed_{students}.db'}"
            runs.append(
                {"backend": "sqlite", "students": students}
                | run_one(url, students, Path(tmp) / f"t{students}")
            )
            if args.postgres:
                import psycopg

                name = f"prepiq_bench_seed_{students}"
                admin = args.postgres.replace("+psycopg", "") + "/postgres"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name}")
                    conn.execute(f"CREATE DATABASE {name}")
                try:
                    runs.append(
                        {"backend": "postgresql", "students": students}
                        | run_one(f"{args.postgres}/{name}", students, Path(tmp) / f"p{students}")
                    )
                finally:
                    with psycopg.connect(admin, autocommit=True) as conn:
                        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    results["runs"] = runs
    for backend in ("sqlite", "postgresql"):
        sized = sorted((r for r in runs if r["backend"] == backend), key=lambda r: r["students"])
        if len(sized) >= 2:
            small, large = sized[0], sized[-1]
            # 1.0 means exactly linear: time per student stays the same as the size grows.
            results[f"{backend}_time_per_student_ratio"] = round(
                large["seconds_per_1000_students"] / small["seconds_per_1000_students"], 2
            )
    results["host_max_rss_children_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
