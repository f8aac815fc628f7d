"""Trials per minute of one model's Optuna study with 1 and with 2 worker processes on a
shared PostgreSQL study, side by side in the same run, on the same snapshot and the same
objective (a throw-away database per measurement). Prints JSON.

Usage: python benchmarks/tuning.py [--model focus-area] [--trials 16]
           [--snapshot data/raw] [--postgres postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="focus-area")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--snapshot", type=Path, default=Path("data/raw"))
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREPIQ_HOME"] = str(Path(tmp) / "home")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        import mlflow

        from core.config import get_settings, load_params
        from features.snapshot import read_manifest
        from training import tracking
        from training.model_spec import TrainingContext, load_frames
        from training.models import MODELS
        from training.tuning import tune

        get_settings().apply_environment()
        spec = MODELS[args.model]
        manifest = read_manifest(args.snapshot)
        if manifest is None:
            raise SystemExit(f"no snapshot in {args.snapshot}: run `prepiq ingest` first")
        params = load_params()
        ctx = TrainingContext(
            snapshot_dir=args.snapshot.resolve(),
            data_dir=args.snapshot.resolve().parent,
            as_of=datetime.fromisoformat(manifest.as_of),
            params=params,
            seed=int(params.get("seed", 42)),
        )
        data = spec.prepare(ctx, load_frames(ctx))
        tracking.configure()
        experiment_id = tracking.experiment(spec.name)
        mlflow.set_experiment(experiment_id=experiment_id)
        results = []
        for workers in args.workers:
            database = f"prepiq_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            try:
                with mlflow.start_run(run_name=f"bench-{workers}-workers") as run:
                    started = time.perf_counter()
                    study = tune(
                        spec,
                        ctx,
                        data,
                        trials=args.trials,
                        storage=f"{args.postgres}/{database}",
                        workers=workers,
                        name=f"bench-{workers}",
                        experiment_id=experiment_id,
                        parent_run_id=run.info.run_id,
                    )
                    seconds = time.perf_counter() - started
                # Read the study before its database goes.
                states = [t.state.name.lower() for t in study.trials]
                results.append(
                    {
                        "workers": workers,
                        "trials": len(states),
                        "pruned": states.count("pruned"),
                        "seconds": round(seconds, 1),
                        "trials_per_minute": round(60 * len(states) / seconds, 2),
                        "best_value": round(float(study.best_value), 4),
                    }
                )
            finally:
                with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        print(
            json.dumps(
                {
                    "benchmark": "tuning",
                    "model": args.model,
                    "snapshot_rows": sum(t.rows for t in manifest.tables.values()),
                    "cpu_count": os.cpu_count(),
                    "note": "seconds include starting the extra worker processes, which "
                    "rebuild the dataset from the snapshot",
                    "results": results,
                    "speedup": round(
                        results[-1]["trials_per_minute"] / results[0]["trials_per_minute"], 2
                    ),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
