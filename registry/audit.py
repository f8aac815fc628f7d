"""The audit trail of the registry: every promotion decision and rollback is an MLflow run
in the experiment `prepiq-promotions` (tags: model, from/to version, decision, actor,
hold-out sha256; metrics of both versions on the hold-out; the report as artifacts), so it
shows in the MLflow UI and `prepiq status --history MODEL` reads it back."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from registry.aliases import CHALLENGER, CHAMPION, alias_version
from registry.gate import GateReport, PromotionParams
from training import tracking
from training.model_spec import ModelSpec
from training.runs import flat_metrics

EXPERIMENT = "prepiq-promotions"
TAG_LIMIT = 5000  # MLflow's limit on a tag value
PROMOTING = ("promoted", "rolled_back")


def actor() -> str:
    """Who or what acts: the CI run when under GitHub Actions, else the user."""
    run_id = os.environ.get("GITHUB_RUN_ID")
    if run_id:
        return f"CI run {run_id}"
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "unknown"


def experiment_id() -> str:
    """The audit experiment (created on first use; a concurrent creator may win)."""
    try:
        return tracking.experiment(EXPERIMENT)
    except MlflowException:
        return tracking.experiment(EXPERIMENT)


def open_record(client: MlflowClient, spec: ModelSpec[Any, Any], action: str, who: str) -> str:
    """Start the audit run of one promotion or rollback; returns its id. It is closed by
    `close_record`; a process killed meanwhile leaves it RUNNING, decision `in progress`."""
    run = client.create_run(
        experiment_id(),
        run_name=f"{spec.key}-{action}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        tags={
            "model": spec.name,
            "model_key": spec.key,
            "action": action,
            "actor": who,
            "decision": "in progress",
        },
    )
    return str(run.info.run_id)


def close_record(
    client: MlflowClient,
    run_id: str,
    *,
    decision: str,
    from_version: str | None,
    to_version: str | None,
    reasons: list[str],
    params: PromotionParams,
    report: GateReport | None = None,
    holdout_sha256: str | None = None,
    markdown: str = "",
    failed: bool = False,
) -> None:
    """Record the decision, every reason, both versions' hold-out metrics and the report."""
    reason_text = "\n".join(reasons)
    tags = {
        "decision": decision,
        "from_version": from_version or "none",
        "to_version": to_version or "none",
        "holdout_sha256": holdout_sha256 or (report.holdout_sha256 if report else "none"),
        "reasons": reason_text[:TAG_LIMIT],
        "mlflow.note.content": (markdown or reason_text)[:TAG_LIMIT],
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key, value in tracking.flat_params({"promotion": params.__dict__}).items():
        client.log_param(run_id, key, value)
    if report is not None:
        metrics: dict[str, float] = {}
        for scored in (report.champion, report.challenger):
            if scored is not None:
                metrics |= flat_metrics(scored.alias, scored.report)
                metrics |= flat_metrics(f"{scored.alias}.slice", scored.slices)
        for metric, figure in metrics.items():
            client.log_metric(run_id, metric, figure)
        client.log_dict(run_id, report.to_dict(), "promotion/report.json")
    if markdown:
        client.log_text(run_id, markdown, "promotion/report.md")
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


@dataclass
class AuditEntry:
    """One line of a model's audit trail."""

    at: datetime
    decision: str
    from_version: str
    to_version: str
    actor: str
    reasons: str
    run_id: str


def _runs(client: MlflowClient, name: str, limit: int) -> list[Run]:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return []
    return list(
        client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.model = '{name}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    )


def history(client: MlflowClient, name: str, limit: int = 100) -> list[AuditEntry]:
    """A model's audit trail, newest first."""
    return [
        AuditEntry(
            at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
            decision=run.data.tags.get("decision", "?"),
            from_version=run.data.tags.get("from_version", "?"),
            to_version=run.data.tags.get("to_version", "?"),
            actor=run.data.tags.get("actor", "?"),
            reasons=run.data.tags.get("reasons", ""),
            run_id=run.info.run_id,
        )
        for run in _runs(client, name, limit)
    ]


@dataclass
class ModelStatus:
    """One row of `prepiq status`."""

    model: str
    main_metric: str
    champion: str | None
    champion_metric: float | None
    challenger: str | None
    challenger_metric: float | None
    trained_at: datetime | None  # of the champion (else the challenger)
    data_version: str | None
    promoted_at: datetime | None


def _version_metric(
    client: MlflowClient, spec: ModelSpec[Any, Any], version: str | None, audits: list[Run]
) -> float | None:
    """The version's main metric on the frozen hold-out from the newest audit that scored
    it, else as its training run logged it."""
    if version is None:
        return None
    for run in audits:
        for alias, tag in ((CHALLENGER, "to_version"), (CHAMPION, "from_version")):
            value = run.data.metrics.get(f"{alias}.model.{spec.main_metric}")
            if run.data.tags.get(tag) == version and value is not None:
                return float(value)
    run_id = client.get_model_version(spec.name, version).run_id
    value = client.get_run(str(run_id)).data.metrics.get(f"holdout.model.{spec.main_metric}")
    return None if value is None else float(value)


def status(client: MlflowClient, specs: list[ModelSpec[Any, Any]]) -> list[ModelStatus]:
    """Champion and challenger of every model, their metrics, lineage and promotion time."""
    rows = []
    for spec in specs:
        champion = alias_version(client, spec.name, CHAMPION)
        challenger = alias_version(client, spec.name, CHALLENGER)
        audits = _runs(client, spec.name, 200)
        shown = champion or challenger
        trained_at, data_version, promoted_at = None, None, None
        if shown is not None:
            run = client.get_run(str(client.get_model_version(spec.name, shown).run_id))
            trained_at = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
            data_version = run.data.tags.get("data_version")
        for audit in audits:
            if (
                audit.data.tags.get("decision") in PROMOTING
                and audit.data.tags.get("to_version") == champion
            ):
                promoted_at = datetime.fromtimestamp(audit.info.start_time / 1000, UTC)
                break
        rows.append(
            ModelStatus(
                model=spec.name,
                main_metric=spec.main_metric,
                champion=champion,
                champion_metric=_version_metric(client, spec, champion, audits),
                challenger=challenger,
                challenger_metric=_version_metric(client, spec, challenger, audits),
                trained_at=trained_at,
                data_version=data_version,
                promoted_at=promoted_at,
            )
        )
    return rows
