"""`prepiq reproduce`: a registered version's hold-out metrics, recomputed from nothing but
what its training run recorded.

From the version's run it reads the data version (the DVC hash the run pushed), the
snapshot's point in time and content hash, the params.yaml it logged, its seed and its
student sample. It restores that snapshot from the DVC remote into a scratch folder,
rebuilds the training context from those records alone (nothing from the current
`data/` or `params.yaml`), scores the registered version with the code training scored it
with (`training.runs.evaluate_registered`), and compares every `holdout.*` metric with the
one logged at training.
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
from training.model_spec import ModelSpec, TrainingContext, training_context
from training.runs import PARAMS_ARTIFACT, evaluate_registered, flat_metrics

PREFIX = "holdout"  # the metrics a training run logs from its hold-out report
TRUTH_PREFIX = f"{PREFIX}.against_truth."  # scored against the generator's truth, if present
DEFAULT_TOLERANCE = 1e-6  # relative: a loaded model must score what the in-memory one did
REPORT = "reproduction.json"

Status = Literal["match", "differs", "missing", "not logged", "skipped"]


@dataclass(frozen=True)
class MetricCheck:
    """One hold-out metric: as logged at training and as recomputed now."""

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
        return bool(self.checks) and not self.failures

    def summary(self) -> str:
        """One line: reproduced, or which metrics differ."""
        compared = [c for c in self.checks if c.status != "skipped"]
        if self.ok:
            return (
                f"{self.model} v{self.version}: all {len(compared)} hold-out metrics reproduced "
                f"(relative tolerance {self.tolerance:g}) on data version {self.data_version}"
            )
        return f"{self.model} v{self.version}: " + "; ".join(
            _describe(check) for check in self.failures
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _describe(check: MetricCheck) -> str:
    if check.status == "missing":
        return f"{check.name} logged {check.logged:.6g}, not recomputed"
    if check.status == "not logged":
        return f"{check.name} recomputed {check.reproduced:.6g}, never logged"
    return f"{check.name} differs (logged {check.logged:.6g}, now {check.reproduced:.6g})"


def compare(
    logged: dict[str, float],
    reproduced: dict[str, float],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    truth_available: bool = True,
) -> list[MetricCheck]:
    """Every hold-out metric of either side, judged. A metric on one side only fails (the
    evaluation code or the data differ), except a ground-truth metric when there is no
    truth folder here: the generator's truth is a yardstick kept outside the snapshot."""
    checks = []
    for name in sorted(set(logged) | set(reproduced)):
        was, now = logged.get(name), reproduced.get(name)
        status: Status
        if was is not None and now is not None:
            close = math.isclose(was, now, rel_tol=tolerance, abs_tol=tolerance * 1e-3)
            status = "match" if close else "differs"
        elif now is None:
            status = (
                "skipped" if name.startswith(TRUTH_PREFIX) and not truth_available else "missing"
            )
        else:
            status = "not logged"
        checks.append(MetricCheck(name, was, now, status))
    return checks


def training_run(client: MlflowClient, spec: ModelSpec, version: int) -> tuple[Run, str]:
    """The run that trained version `version` of `spec`, and the version's number."""
    try:
        registered = client.get_model_version(spec.name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{spec.name} has no version {version}: {exc.message}") from exc
    if not registered.run_id:
        raise RegistryError(f"{spec.name} v{version} was not logged from a run")
    return client.get_run(registered.run_id), str(registered.version)


def _data_version(run: Run, spec: ModelSpec, version: str) -> str:
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
    spec: ModelSpec,
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
            logged, flat_metrics(PREFIX, report), tolerance=tolerance, truth_available=truth
        ),
    )
    (into / REPORT).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def reproduce_in_scratch(
    spec: ModelSpec,
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
