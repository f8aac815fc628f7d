"""`prepiq reproduce`: a registered version's hold-out metrics, recomputed from nothing but
what its training run recorded.

From the version's run it reads the data version (the DVC hash the run pushed), the
snapshot's point in time and content hash, the params.yaml it logged, its seed and its
student sample. It restores that snapshot from the DVC remote into a scratch folder,
rebuilds the training context from those records alone (nothing from the current
`data/` or `params.yaml`), scores the registered version with the code training scored it
with (`training.runs.evaluate_registered`), and compares its `holdout.*` metrics with the
ones logged at training.

Some training reports also hold figures of other fits than the registered version (the
recommender's ablation, the ranker's rolling hold-out refitted per year): a spec may say,
with an optional `registered_sections(report)`, where in its training report the registered
version is scored as `evaluate` scores it; the rest is listed as "training only".
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from core.config import get_settings
from core.exceptions import ConfigError, DataVersionError, RegistryError
from features.snapshot import RAW_DIR, read_manifest
from features.versioning import fetch_snapshot
from training import tracking
from training.model_spec import ModelSpec, TrainingContext
from training.models import training_context
from training.runs import PARAMS_ARTIFACT, evaluate_registered, flat_metrics

PREFIX = "holdout"  # the metrics a training run logs from its hold-out report
# Sections computed from the generator's truth, if present: scores against it, and the
# oracle of the same label with the gap the model closes towards it.
TRUTH_PREFIXES = tuple(
    f"{PREFIX}.{section}." for section in ("against_truth", "oracle", "gap_closed")
)
DEFAULT_TOLERANCE = 1e-6  # relative: a loaded model must score what the in-memory one did
REPORT = "reproduction.json"
NAMED_FAILURES = 5  # the one-line verdict names this many; the table has them all

Status = Literal["match", "differs", "missing", "not logged", "skipped", "training only"]


@dataclass(frozen=True)
class MetricCheck:
    """One hold-out metric: as logged at training (under its logged name) and as
    recomputed now."""

    name: str
    logged: float | None
    reproduced: float | None
    status: Status

    @property
    def failed(self) -> bool:
        return self.status in ("differs", "missing", "not logged")


@dataclass
class Reproduction:
    """What `reproduce` found for one registered version."""

    model: str
    version: str
    run_id: str
    data_version: str
    remote: str
    snapshot_dir: str
    trained_commit: str
    current_commit: str
    tolerance: float
    checks: list[MetricCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.failed]

    @property
    def ok(self) -> bool:
        return any(c.status == "match" for c in self.checks) and not self.failures

    def summary(self) -> str:
        """One line: reproduced, or which metrics differ."""
        if self.ok:
            matched = sum(c.status == "match" for c in self.checks)
            other = sum(c.status == "training only" for c in self.checks)
            aside = f"; {other} logged about other fits, not comparable" if other else ""
            return (
                f"{self.model} v{self.version}: all {matched} hold-out metrics of the version "
                f"reproduced (relative tolerance {self.tolerance:g}) on data version "
                f"{self.data_version}{aside}"
            )
        failures = self.failures
        named = "; ".join(_describe(check) for check in failures[:NAMED_FAILURES])
        more = len(failures) - NAMED_FAILURES
        return f"{self.model} v{self.version}: {named}" + (f"; and {more} more" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _describe(check: MetricCheck) -> str:
    if check.status == "missing":
        return f"{check.name} logged {check.logged:.6g}, not recomputed"
    if check.status == "not logged":
        return f"{check.name} recomputed {check.reproduced:.6g}, never logged"
    return f"{check.name} differs (logged {check.logged:.6g}, now {check.reproduced:.6g})"


def nested(metrics: dict[str, float], prefix: str = PREFIX) -> dict[str, Any]:
    """`prefix.section.key` metrics back into a report's nested sections (the inverse of
    `training.runs.flat_metrics`)."""
    report: dict[str, Any] = {}
    for name, value in metrics.items():
        *path, last = name.removeprefix(f"{prefix}.").split(".")
        node = report
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return report


def compare(
    logged: dict[str, float],
    reproduced: dict[str, float],
    sections: dict[str, str] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    truth_available: bool = True,
) -> list[MetricCheck]:
    """Every logged and every recomputed hold-out metric, judged. `sections` maps each
    section of the recomputed report to its dotted path in the training report (default:
    the same name); a logged metric outside those paths was about another fit (an
    ablation, a refit) and is "training only". Inside them, a metric on one side only
    fails (the evaluation code or the data differ), except a ground-truth metric when there
    is no truth folder here: the generator's truth is a yardstick kept outside the
    snapshot."""
    paths = sections if sections is not None else {k: k for k in nested(logged)}

    def logged_name(name: str) -> str | None:
        section, _, rest = name.removeprefix(f"{PREFIX}.").partition(".")
        path = paths.get(section)
        return None if path is None else ".".join(p for p in (PREFIX, path, rest) if p)

    counterpart: dict[str, str] = {}  # logged name -> recomputed name
    checks = []
    for name in sorted(reproduced):
        where = logged_name(name)
        if where is None:  # a section the training report has no place for
            checks.append(MetricCheck(name, None, reproduced[name], "not logged"))
        else:
            counterpart[where] = name
    scopes = [f"{PREFIX}.{path}" for path in paths.values()]
    for name in sorted(set(logged) | set(counterpart)):
        was = logged.get(name)
        now = reproduced.get(counterpart[name]) if name in counterpart else None
        status: Status
        if was is not None and now is not None:
            close = math.isclose(was, now, rel_tol=tolerance, abs_tol=tolerance * 1e-3)
            status = "match" if close else "differs"
        elif was is None:
            status = "not logged"
        elif not any(name == scope or name.startswith(f"{scope}.") for scope in scopes):
            status = "training only"
        elif name.startswith(TRUTH_PREFIXES) and not truth_available:
            status = "skipped"
        else:
            status = "missing"
        checks.append(MetricCheck(name, was, now, status))
    return checks


def training_run(client: MlflowClient, spec: ModelSpec[Any, Any], version: int) -> tuple[Run, str]:
    """The run that trained version `version` of `spec`, and the version's number."""
    try:
        registered = client.get_model_version(spec.name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{spec.name} has no version {version}: {exc.message}") from exc
    if not registered.run_id:
        raise RegistryError(f"{spec.name} v{version} was not logged from a run")
    return client.get_run(registered.run_id), str(registered.version)


def _data_version(run: Run, spec: ModelSpec[Any, Any], version: str) -> str:
    tags = run.data.tags
    data_version = tags.get("data_version", "")
    if not data_version.endswith(".dir"):
        raise DataVersionError(
            f"{spec.name} v{version} (run {run.info.run_id}) recorded no data version "
            f"({data_version or 'none'}): its snapshot cannot be restored"
        )
    return data_version


def run_params(client: MlflowClient, run: Run, scratch: Path) -> dict[str, Any]:
    """The params.yaml the run logged, read back (a copy is left in `scratch`)."""
    try:
        path = client.download_artifacts(run.info.run_id, PARAMS_ARTIFACT, str(scratch))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"run {run.info.run_id} logged no {PARAMS_ARTIFACT}: it cannot be rebuilt"
        ) from exc
    loaded = yaml.safe_load(Path(path).read_text())
    if not isinstance(loaded, dict):
        raise RegistryError(f"run {run.info.run_id}: its {PARAMS_ARTIFACT} is not a mapping")
    return loaded


def run_context(client: MlflowClient, run: Run, data_dir: Path) -> TrainingContext:
    """The training context of `run`, rebuilt from its records on the snapshot restored
    under `data_dir`: the point in time of its tags, its logged params.yaml (and so its
    seed), its student sample."""
    tags, params = run.data.tags, run.data.params
    if "snapshot_as_of" not in tags:
        raise RegistryError(f"run {run.info.run_id} recorded no snapshot_as_of")
    logged = run_params(client, run, data_dir)
    sample = params.get("students_sample", "all")
    ctx = training_context(
        data_dir,
        datetime.fromisoformat(tags["snapshot_as_of"]),
        params=logged,
        students=None if sample == "all" else int(sample),
    )
    if "seed" in params and int(params["seed"]) != ctx.seed:
        raise RegistryError(
            f"run {run.info.run_id}: its params.yaml gives seed {ctx.seed}, "
            f"but it logged seed {params['seed']}"
        )
    return ctx


def reproduce(
    spec: ModelSpec[Any, Any],
    version: int,
    into: Path,
    *,
    remote_url: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Reproduction:
    """Restore version `version`'s snapshot into `into/raw`, evaluate the version on it
    and compare with the metrics its run logged. `remote_url` defaults to
    PREPIQ_DVC_REMOTE_URL, else the DVC repository's default remote. The evaluation
    report and `reproduction.json` are written under `into`."""
    settings = get_settings()
    if into.expanduser().resolve() == settings.data_dir:
        raise ConfigError(f"--into {into}: that is the live data folder; name a scratch folder")
    into.mkdir(parents=True, exist_ok=True)
    uri = tracking.configure(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run, number = training_run(client, spec, version)
    data_version = _data_version(run, spec, number)
    try:
        remote = fetch_snapshot(data_version, into / RAW_DIR, remote_url or settings.dvc_remote_url)
    except DataVersionError as exc:
        # What the run recorded of its push: the usual fix is its remote (--remote).
        pushed = run.data.tags.get("data_pushed", "unknown")
        where = run.data.tags.get("data_remote", "none")
        raise DataVersionError(
            f"{exc} (at training: data_remote {where}, data_pushed {pushed})"
        ) from exc
    manifest = read_manifest(into / RAW_DIR)
    recorded = run.data.tags.get("snapshot_content_hash")
    if manifest is None or (recorded and manifest.content_hash != recorded):
        raise DataVersionError(
            f"the snapshot {data_version} restored into {into / RAW_DIR} is not the one run "
            f"{run.info.run_id} recorded (content hash {recorded})"
        )
    ctx = run_context(client, run, into)
    report, _ = evaluate_registered(
        spec, ctx, f"models:/{spec.name}/{number}", into / "evaluation" / spec.key
    )
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith(f"{PREFIX}.")}
    # Where its training report scores the registered version itself.
    sections = spec.registered_sections(nested(logged))
    truth = ctx.truth_dir is not None and ctx.truth_dir.exists()
    result = Reproduction(
        model=spec.name,
        version=number,
        run_id=run.info.run_id,
        data_version=data_version,
        remote=remote,
        snapshot_dir=str(into / RAW_DIR),
        trained_commit=run.data.tags.get("git_commit", "unknown"),
        current_commit=tracking.git_commit(),
        tolerance=tolerance,
        checks=compare(
            logged,
            flat_metrics(PREFIX, report),
            sections,
            tolerance=tolerance,
            truth_available=truth,
        ),
    )
    (into / REPORT).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def reproduce_in_scratch(
    spec: ModelSpec[Any, Any],
    version: int,
    into: Path | None = None,
    *,
    remote_url: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Reproduction:
    """`reproduce` into `into`, or into a temporary folder removed afterwards."""
    if into is not None:
        return reproduce(spec, version, into, remote_url=remote_url, tolerance=tolerance)
    with tempfile.TemporaryDirectory(prefix=f"prepiq-reproduce-{spec.key}-") as tmp:
        return reproduce(spec, version, Path(tmp), remote_url=remote_url, tolerance=tolerance)
