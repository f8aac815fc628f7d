"""Hold-out quality of one model on one snapshot, next to its baselines and (with the
generator's truth) against it: the model's own prepare, Optuna tuning, refit and
evaluation, as a training run does them, without the registry. Prints the report as JSON,
with whether the issue's target is met.

Usage: python benchmarks/model_quality.py --model topic-recommender --snapshot DIR
           [--truth DIR] [--seed N] [--trials N] [--set focus_area.label_window_days=60]
           [--cache DIR]

A draw to measure on (a seeded 2,000-student source and its snapshot, in a tmp folder):
    export PREPIQ_HOME=/tmp/draw/home PREPIQ_DATA_DIR=/tmp/draw/data
    python -m prepiq.cli seed --seed 7 --end-date 2026-11-23
    python -m prepiq.cli ingest --as-of 2026-11-24T00:00:00Z
then `--snapshot /tmp/draw/data/raw --truth /tmp/draw/home/ground_truth`.
`--cache` keeps the prepared dataset between runs (keyed by the snapshot, the model's
params section and the seed), so repeated experiments skip the feature building.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml


def with_overrides(params: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """params.yaml with `section.key=value` assignments (values parsed as YAML)."""
    out = json.loads(json.dumps(params))
    for assignment in assignments:
        path, _, raw = assignment.partition("=")
        if not raw or "." not in path:
            raise SystemExit(f"--set expects section.key=value, got {assignment!r}")
        *parents, key = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = yaml.safe_load(raw)
    return out


def target_met(model: str, report: dict[str, Any]) -> dict[str, Any]:
    """The issue's quality target of the model on this report."""
    mine = report["model"]
    baselines = {k: v for k, v in report.items() if k.startswith("baseline_")}
    if model == "topic-recommender":
        # Issue 17's target is against the truth: NDCG@10 at least +10% over every
        # baseline (the label's uplift is reported beside it, to hold today's level).
        best = max(baselines, key=lambda k: baselines[k]["ndcg_10"])
        uplift = mine["ndcg_10"] / baselines[best]["ndcg_10"] - 1
        out: dict[str, Any] = {"best_baseline": best, "uplift": round(uplift, 4)}
        truth = {k: v for k, v in report.get("against_truth", {}).items() if k != "oracle"}
        if not truth:
            return out | {"met": None}
        truth_best = max((k for k in truth if k != "model"), key=lambda k: truth[k]["ndcg_10"])
        truth_uplift = truth["model"]["ndcg_10"] / truth[truth_best]["ndcg_10"] - 1
        return out | {
            "truth_best_baseline": truth_best,
            "truth_uplift": round(truth_uplift, 4),
            "gap_closed": report.get("gap_closed", {}).get("ndcg_10_against_truth"),
            "met": truth_uplift >= 0.10,
        }
    if model == "focus-area":
        # Issue 17's target (the F1 >= 0.85 one of the training issue is retired): gap
        # closed >= 0.5 on F1, F1 and PR-AUC above both baselines, accuracy >= 0.85 and
        # ROC-AUC >= 0.90. The paired bootstrap against each baseline is not computed yet,
        # so "beats" is on the point estimates only.
        gap = report.get("gap_closed", {}).get("f1")
        beats = all(
            mine["f1"] > b["f1"] and mine["pr_auc"] > b["pr_auc"] for b in baselines.values()
        )
        met = (
            gap is not None
            and gap["value"] >= 0.5
            and mine["accuracy"] >= 0.85
            and mine["roc_auc"] >= 0.90
            and beats
        )
        return {"gap_closed_f1": gap, "beats_both_baselines_f1_pr_auc": beats, "met": bool(met)}
    return {}


def prepared(spec: Any, ctx: Any, cache: Path | None) -> Any:
    """The model's dataset, from the cache when the same snapshot, section and seed built it."""
    from features.snapshot import read_manifest
    from training.model_spec import load_frames

    if cache is None:
        return spec.prepare(ctx, load_frames(ctx))
    manifest = read_manifest(ctx.snapshot_dir)
    section = ctx.params.get(spec.key.replace("-", "_"), {})
    key = json.dumps([spec.key, manifest.content_hash if manifest else "", section, ctx.seed])
    path = cache / f"{spec.key}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    data = spec.prepare(ctx, load_frames(ctx))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="e.g. topic-recommender, focus-area")
    parser.add_argument("--snapshot", type=Path, required=True, help="a snapshot (data/raw)")
    parser.add_argument("--truth", type=Path, default=None, help="the generator's truth folder")
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml")
    parser.add_argument("--trials", type=int, default=None, help="default: params.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--cache", type=Path, default=None, help="folder of prepared datasets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away MLflow store for the nested trial runs; nothing of the developer's.
        os.environ["PREPIQ_HOME"] = str(Path(tmp) / "home")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        import mlflow

        from core.config import get_settings, load_params
        from features.snapshot import read_manifest
        from training import tracking
        from training.model_spec import TrainingContext
        from training.models import MODELS
        from training.tuning import run_study

        get_settings().apply_environment()
        if args.model not in MODELS:
            raise SystemExit(f"unknown model {args.model!r}; one of {', '.join(MODELS)}")
        spec = MODELS[args.model]
        manifest = read_manifest(args.snapshot)
        if manifest is None:
            raise SystemExit(f"no snapshot in {args.snapshot}: run `prepiq ingest` first")
        params = with_overrides(load_params(), args.set)
        seed = args.seed if args.seed is not None else int(params.get("seed", 42))
        ctx = TrainingContext(
            snapshot_dir=args.snapshot.resolve(),
            data_dir=args.snapshot.resolve().parent,
            as_of=datetime.fromisoformat(manifest.as_of),
            params=params,
            seed=seed,
            truth_dir=args.truth.resolve() if args.truth else None,
        )
        started = time.perf_counter()
        data = prepared(spec, ctx, args.cache)
        prepare_seconds = time.perf_counter() - started
        trials = args.trials or spec.default_trials(ctx)
        tracking.configure()
        mlflow.set_experiment(experiment_id=tracking.experiment(spec.name))
        started = time.perf_counter()
        with mlflow.start_run(run_name=f"quality-{spec.key}") as run:
            study = run_study(
                f"quality-{spec.key}",
                spec.objective(ctx, data),
                trials=trials,
                seed=seed,
                direction=spec.direction,
                parent_run_id=run.info.run_id,
            )
            tune_seconds = time.perf_counter() - started
            started = time.perf_counter()
            outcome = spec.finish(ctx, data, dict(study.best_params), float(study.best_value))
        print(
            json.dumps(
                {
                    "benchmark": "model_quality",
                    "model": spec.key,
                    "snapshot": str(args.snapshot),
                    "as_of": manifest.as_of,
                    "seed": seed,
                    "trials": trials,
                    "overrides": args.set,
                    "best_params": study.best_params,
                    "cv_score": study.best_value,
                    "seconds": {
                        "prepare": round(prepare_seconds, 1),
                        "tune": round(tune_seconds, 1),
                        "finish": round(time.perf_counter() - started, 1),
                    },
                    "target": target_met(spec.key, outcome.report),
                    "report": outcome.report,
                },
                indent=2,
                default=float,
            )
        )


if __name__ == "__main__":
    main()
