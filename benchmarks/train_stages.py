"""Time of each stage of the main job on the embedded defaults, from nothing: seeding the
source, then the training flow's stages (ingest and gate, features, each model), in a
throw-away PREPIQ_HOME so nothing of the developer's is reused. Prints JSON.

Usage: python benchmarks/train_stages.py [--students 2000] [--trials N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=None, help="default: params.yaml")
    parser.add_argument("--trials", type=int, default=None, help="default: params.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREPIQ_HOME"] = str(Path(tmp) / "home")
        os.environ["PREPIQ_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.pop("PREPIQ_SOURCE_URL", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from core.config import get_settings, load_params
        from core.database import get_engine
        from features.migrate import upgrade
        from pipelines.train import train_flow
        from synthetic.generator import seed_source

        settings = get_settings()
        settings.apply_environment()
        students = args.students or int(load_params()["synthetic"]["students"])
        total = time.perf_counter()
        started = time.perf_counter()
        engine = get_engine()
        upgrade(engine)
        seed_source(engine, students=students, seed=42, truth_dir=settings.ground_truth_dir)
        seed_seconds = round(time.perf_counter() - started, 2)
        report = train_flow(trials=args.trials)
        print(
            json.dumps(
                {
                    "benchmark": "train_stages",
                    "students": students,
                    "trials": args.trials or "params.yaml",
                    "stage_seconds": {"seed": seed_seconds, **report.stage_seconds},
                    "total_seconds": round(time.perf_counter() - total, 2),
                    "models": [
                        {
                            k: getattr(m, k)
                            for k in (
                                "model",
                                "version",
                                "main_metric",
                                "value",
                                "best_baseline",
                                "baseline_value",
                            )
                        }
                        for m in report.models
                    ],
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
