"""One tracked training run per model, the same for all four: build the dataset, tune with
Optuna (trials nested under the run), refit and evaluate against the baselines, log
everything to MLflow (lineage, params, report, plots) and log the model with its
signature, input example and pinned requirements as a new registered version."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from core.config import get_settings
from core.exceptions import ConfigError
from features.snapshot import read_manifest
from features.validation import report_path
from training import reports, tracking
from training.model_spec import ModelSpec, Outcome, TrainingContext, load_frames
from training.tuning import tune

PARAMS_ARTIFACT = "params.yaml"  # the run's params, from which `prepiq reproduce` rebuilds it


@dataclass(frozen=True)
class RunSummary:
    """What a training run produced, for the flow's summary table."""

    model: str
    run_id: str
    version: str
    main_metric: str
    value: float
    best_baseline: str
    baseline_value: float
    higher_is_better: bool
    report: str

    @property
    def uplift(self) -> float:
        """Relative improvement of the main metric over the best baseline."""
        return relative_gain(self.value, self.baseline_value, self.higher_is_better)


def relative_gain(value: float, reference: float, higher_is_better: bool) -> float:
    """Relative improvement of `value` over `reference` (positive when `value` is better,
    whichever direction the metric runs; NaN when the reference is zero)."""
    if not reference:
        return float("nan")
    gain = value - reference
    return (gain if higher_is_better else -gain) / abs(reference)


def flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Nested report -> MLflow metric names such as `holdout.model.f1` (finite numbers only)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out |= flat_metrics(name, value)
        elif isinstance(value, int | float) and np.isfinite(value):
            out[name] = float(value)
    return out


def study_name(spec: ModelSpec[Any, Any], ctx: TrainingContext, trials: int, shared: bool) -> str:
    """A study per model per training run. In shared storage the name is derived from
    content only: the snapshot's content hash (its manifest), its point in time, the
    params, the student sample and the trial budget. No path enters it, so the same
    command on another machine, holding the same snapshot anywhere, joins the study."""
    if not shared:
        return f"{spec.key}-{ctx.as_of:%Y%m%d%H%M%S}"
    manifest = read_manifest(ctx.snapshot_dir)
    if manifest is None:
        raise ConfigError(f"no snapshot in {ctx.snapshot_dir}; run `prepiq ingest` first")
    digest = hashlib.sha256(
        json.dumps(
            [
                spec.key,
                manifest.content_hash,
                ctx.as_of.isoformat(),
                ctx.params,
                ctx.students,
                trials,
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    return f"{spec.key}-{digest[:12]}"


def train_and_log(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    *,
    storage: str | None = None,
    workers: int = 1,
) -> RunSummary:
    """Train, evaluate, log and register one model on the context's snapshot."""

    # First, so that a push that must succeed stops the run before any training, and the
    # hash the run records is that of the folder the data is then read from.
    data_version = tracking.publish_snapshot(ctx.snapshot_dir)
    frames = load_frames(ctx)
    data = spec.prepare(ctx, frames)
    trials = ctx.trials or spec.default_trials(ctx)
    tracking.configure()
    # The active experiment, so the nested trial runs land beside their parent.
    experiment_id = tracking.experiment(spec.name)
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name=f"{spec.key}-{ctx.as_of:%Y%m%d-%H%M}") as run:
        mlflow.set_tags(
            tracking.lineage(ctx.snapshot_dir)
            | data_version
            | {"model": spec.name, "trials": str(trials)}
        )
        section = spec.key.replace("-", "_")
        mlflow.log_params(
            tracking.flat_params({section: ctx.params.get(section, {})})
            | {"seed": ctx.seed, "students_sample": ctx.students or "all"}
        )
        mlflow.log_text(
            tracking.params_text(ctx.params, get_settings().params_file), PARAMS_ARTIFACT
        )
        gate_report = report_path(ctx.data_dir)
        if gate_report.exists():  # the data gate's verdict on the snapshot trained on
            mlflow.log_artifact(str(gate_report), artifact_path="data_gate")
        study = tune(
            spec,
            ctx,
            data,
            trials=trials,
            storage=storage,
            workers=workers,
            name=study_name(spec, ctx, trials, shared=storage is not None or workers > 1),
            experiment_id=experiment_id,
            parent_run_id=run.info.run_id,
        )
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("cv_score", float(study.best_value))
        outcome = spec.finish(ctx, data, dict(study.best_params), float(study.best_value))
        mlflow.log_params({f"refit.{k}": v for k, v in outcome.params.items()})
        mlflow.log_metrics(flat_metrics("holdout", outcome.report))
        _log_evaluation(outcome)
        version = register_model(spec, outcome)
    name, baseline = outcome.best_baseline()
    return RunSummary(
        model=spec.name,
        run_id=run.info.run_id,
        version=version,
        main_metric=outcome.main_label,
        value=outcome.value(),
        best_baseline=name,
        baseline_value=baseline,
        higher_is_better=outcome.higher_is_better,
        report=f"runs:/{run.info.run_id}/evaluation/evaluation.md",
    )


def _log_evaluation(outcome: Outcome) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reports.write(folder, outcome.report, outcome.markdown)
        if outcome.plots is not None:
            outcome.plots(folder)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")


def register_model(spec: ModelSpec[Any, Any], outcome: Outcome) -> str:
    """Log the outcome's model (signature, input example, pinned requirements) in the
    active run as a new registered version of `spec`; returns the version."""
    example = outcome.input_example
    output = outcome.output_example
    if output is None:
        output = outcome.python_model.predict(None, example)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=outcome.python_model,
        artifacts=outcome.artifacts or None,
        input_example=example,
        signature=infer_signature(example, output),
        pip_requirements=outcome.requirements,
        registered_model_name=spec.name,
    )
    return str(info.registered_model_version)


def evaluate_registered(
    spec: ModelSpec[Any, Any], ctx: TrainingContext, model_uri: str, out_dir: Path
) -> tuple[dict[str, Any], str]:
    """Score a registered version (`models:/name@alias` or `models:/name/version`) on the
    hold-out of the context's snapshot next to the baselines, as training scored it; write
    the JSON and Markdown report to `out_dir`."""
    tracking.configure()
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ConfigError(f"cannot load {model_uri}: {exc.message}") from exc
    data = spec.prepare(ctx, load_frames(ctx))
    report, markdown = spec.evaluate(ctx, data, model.predict)
    markdown = f"Model: `{model_uri}` (run {model.metadata.run_id})\n\n{markdown}"
    reports.write(out_dir, report, markdown)
    return report, markdown
