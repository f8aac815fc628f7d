"""The training flow (`prepiq train`, `make train`): ingest through the data gate, build
the feature tables, then train, evaluate and register each model, and print a summary.

Each task calls one plain function; the models train one after another here because each
already uses both cores (tuning in parallel across models would only contend)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task

from core.config import get_settings
from core.exceptions import ConfigError
from features.snapshot import RAW_DIR, read_manifest
from features.store import FEATURES_DIR, build_feature_tables
from pipelines.alerts import alert_on_failure
from pipelines.ingest import ingest_flow
from registry.aliases import mark_challenger
from training.model_spec import TrainingContext
from training.models import MODELS, training_context
from training.runs import RunSummary, train_and_log


@task(name="build-features")
def build_features(data_dir: Path, as_of: datetime) -> str:
    manifest = build_feature_tables(data_dir / RAW_DIR, data_dir / FEATURES_DIR, as_of)
    return str(manifest["content_hash"])


@dataclass(frozen=True)
class TrainedModel(RunSummary):
    """A model's training run in the flow, with the champion its new version (now the
    challenger) will be judged against."""

    champion: str | None


@task(name="train-model")
def train_model(
    model: str,
    ctx: TrainingContext,
    storage: str | None,
    workers: int,
) -> TrainedModel:
    summary = train_and_log(MODELS[model], ctx, storage=storage, workers=workers)
    champion = mark_challenger(MlflowClient(), summary.model, summary.version)
    get_run_logger().info(
        "%s version %s: %s %.3f (best baseline %s %.3f)",
        summary.model,
        summary.version,
        summary.main_metric,
        summary.value,
        summary.best_baseline,
        summary.baseline_value,
    )
    return TrainedModel(**vars(summary), champion=champion)


@dataclass
class TrainReport:
    """What a training flow produced: one summary per model and the time of each stage."""

    models: list[TrainedModel]
    stage_seconds: dict[str, float] = field(default_factory=dict)


@flow(name="prepiq-train", on_failure=[alert_on_failure])
def train_flow(
    models: list[str] | None = None,
    trials: int | None = None,
    source_url: str | None = None,
    data_dir: Path | None = None,
    as_of: datetime | None = None,
    storage: str | None = None,
    ingest: bool = True,
    workers: int = 1,
    students: int | None = None,
) -> TrainReport:
    """Ingest, validate, build features, then train every requested model. With
    `ingest=False` the models train on the current snapshot (it passed the gate when it
    was published), as the DVC train stages do."""
    unknown = sorted(set(models or []) - set(MODELS))
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    settings = get_settings()
    data = data_dir or settings.data_dir
    storage = storage or settings.optuna_storage
    report = TrainReport(models=[])
    started = time.perf_counter()
    if ingest:
        manifest = ingest_flow(source_url=source_url, data_dir=data, as_of=as_of)
    else:
        current = read_manifest(data / RAW_DIR)
        if current is None:
            raise ConfigError(f"no snapshot in {data / RAW_DIR}; run `prepiq ingest` first")
        manifest = current
    report.stage_seconds["ingest_and_gate"] = round(time.perf_counter() - started, 2)
    moment = datetime.fromisoformat(manifest.as_of)
    started = time.perf_counter()
    build_features(data, moment)
    report.stage_seconds["features"] = round(time.perf_counter() - started, 2)
    ctx = training_context(data, moment, trials=trials, students=students)
    for model in models or list(MODELS):
        started = time.perf_counter()
        report.models.append(train_model(model, ctx, storage, workers))
        report.stage_seconds[f"train_{model}"] = round(time.perf_counter() - started, 2)
    return report
