"""The flow the nightly and weekly deployments run (pipelines/deployments.py): ingest
through the data gate and train (`train_flow`, as `prepiq train`), then put each new
challenger through the promotion gate (`registry.promotion.promote`, as `prepiq promote`).

One model's promotion error does not stop the others; the run fails at the end when any
errored, so it shows as Failed on the server while every decision is audited in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from core.config import get_settings
from core.exceptions import ConfigError, RegistryError
from features.snapshot import RAW_DIR, read_manifest
from pipelines.alerts import alert_if_refused, alert_on_failure
from pipelines.train import TrainReport, train_flow
from registry.promotion import promote
from training.model_spec import TrainingContext
from training.models import MODELS, training_context


@dataclass
class ScheduledReport:
    """What a scheduled run did: the training report and each model's promotion decision."""

    training: TrainReport
    promotions: dict[str, str]


def snapshot_context(data_dir: Path) -> TrainingContext:
    """The training context of the current snapshot under `data_dir` (what promotion judges on)."""
    manifest = read_manifest(data_dir / RAW_DIR)
    if manifest is None:
        raise ConfigError(f"no snapshot in {data_dir / RAW_DIR}; run `prepiq ingest` first")
    return training_context(data_dir, datetime.fromisoformat(manifest.as_of))


@task(name="promote-model")
def promote_model(key: str, ctx: TrainingContext, actor: str) -> str:
    """Judge `key`'s challenger against its champion; the gate's report becomes an artifact."""
    result = promote(MODELS[key], ctx, actor=actor)
    markdown = result.markdown()
    get_run_logger().info("%s: %s", key, markdown.strip().splitlines()[-1])
    create_markdown_artifact(key=f"promotion-{key}", markdown=markdown)
    alert_if_refused(result)
    return result.decision


def _actor() -> str:
    """Audit trail name of a scheduled run: its deployment and flow run."""
    return f"prefect:{deployment.name or 'no-deployment'}/{flow_run.name or 'local'}"


@flow(name="prepiq-scheduled-training", on_failure=[alert_on_failure])
def scheduled_training_flow(
    models: list[str] | None = None,
    trials: int | None = None,
    workers: int = 1,
    students: int | None = None,
    as_of: datetime | None = None,
    promote_challengers: bool = True,
) -> ScheduledReport:
    """Ingest, train `models` (default: all four) with `trials` per model (default:
    params.yaml's) and promote each challenger that passes the gate."""
    training = train_flow(
        models=models, trials=trials, workers=workers, students=students, as_of=as_of
    )
    report = ScheduledReport(training=training, promotions={})
    if not promote_challengers:
        return report
    ctx = snapshot_context(get_settings().data_dir)
    actor = _actor()
    states = {key: promote_model(key, ctx, actor, return_state=True) for key in models or MODELS}
    failed = []
    for key, state in states.items():
        if state.is_completed():
            report.promotions[key] = str(state.result())
        else:
            report.promotions[key] = "error"
            failed.append(f"{key}: {state.message}")
    if failed:
        raise RegistryError(f"promotion failed for {len(failed)} model(s): {'; '.join(failed)}")
    return report
