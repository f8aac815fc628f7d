"""The fixed, versioned hold-out of each model: what `spec.prepare` built from one snapshot,
frozen to `data/holdout/<key>.joblib` with a JSON sidecar, so the promotion gate scores
every champion and challenger on exactly the same examples until someone refreshes it on
purpose (`prepiq holdout freeze`, `prepiq promote --refresh-holdout`).

Every host finds the same one: a frozen hold-out is also stored in MLflow (both files as
artifacts of a run in the `prepiq-holdouts` experiment), and the registered model's tags
name that run and the file's sha256. A host whose copy is missing or differs downloads
the stored one; only a model with no stored hold-out anywhere is frozen anew (and stored).
So a CI runner that starts empty every night judges on the hold-out frozen the first
night, not on one frozen from that night's snapshot.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core.exceptions import HoldoutError
from features.snapshot import read_manifest
from training import tracking
from training.model_spec import ModelSpec, TrainingContext, load_frames

HOLDOUT_DIR = "holdout"
EXPERIMENT = "prepiq-holdouts"
RUN_TAG, SHA_TAG = "holdout_run_id", "holdout_sha256"  # on the registered model


@dataclass(frozen=True)
class Holdout:
    """A frozen hold-out: the prepared data and the sidecar that identifies it."""

    data: Any
    meta: dict[str, Any]
    path: Path

    @property
    def sha256(self) -> str:
        return str(self.meta["sha256"])


def holdout_path(data_dir: Path, key: str) -> Path:
    """Where the hold-out of model `key` lives (its sidecar beside it, `.json`)."""
    return data_dir / HOLDOUT_DIR / f"{key}.joblib"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def freeze(
    spec: ModelSpec[Any, Any], ctx: TrainingContext, client: MlflowClient | None = None
) -> Path:
    """Build the model's dataset from the context's snapshot, freeze it and store it in
    MLflow as the model's hold-out; returns the path. Written beside and renamed into
    place, so a crash never leaves half a file."""
    path = holdout_path(ctx.data_dir, spec.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = spec.prepare(ctx, load_frames(ctx))
    partial = path.with_suffix(".joblib.partial")
    joblib.dump(data, partial, compress=3)
    manifest = read_manifest(ctx.snapshot_dir)
    section = spec.key.replace("-", "_")
    meta = {
        "model": spec.name,
        "key": spec.key,
        "snapshot_content_hash": manifest.content_hash if manifest else None,
        "as_of": ctx.as_of.isoformat(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": ctx.seed,
        "params": ctx.params.get(section, {}),
        "sha256": file_sha256(partial),
    }
    partial.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    store(spec, path, client)
    return path


def store(spec: ModelSpec[Any, Any], path: Path, client: MlflowClient | None = None) -> str:
    """Log a frozen hold-out (file and sidecar) to MLflow and name it on the registered
    model (created when missing) as the one the gate judges on; returns the run id."""
    client = client or MlflowClient()
    meta = json.loads(path.with_suffix(".json").read_text())
    experiment_id = tracking.experiment(EXPERIMENT, client=client)
    run = client.create_run(
        experiment_id,
        run_name=f"holdout-{spec.key}",
        tags={"model": spec.name, "sha256": meta["sha256"], "as_of": meta["as_of"]},
    )
    for file in (path, path.with_suffix(".json")):
        client.log_artifact(run.info.run_id, str(file), artifact_path=HOLDOUT_DIR)
    client.set_terminated(run.info.run_id)
    try:
        client.get_registered_model(spec.name)
    except MlflowException:
        client.create_registered_model(spec.name)
    # The sha first: a reader seeing the new run id always sees its sha too.
    client.set_registered_model_tag(spec.name, SHA_TAG, meta["sha256"])
    client.set_registered_model_tag(spec.name, RUN_TAG, run.info.run_id)
    return str(run.info.run_id)


def stored(spec: ModelSpec[Any, Any], client: MlflowClient) -> tuple[str, str] | None:
    """(run id, sha256) of the hold-out stored for the model in MLflow, if any."""
    try:
        tags = client.get_registered_model(spec.name).tags
    except MlflowException:
        return None
    if RUN_TAG not in tags or SHA_TAG not in tags:
        return None
    return tags[RUN_TAG], tags[SHA_TAG]


def download(spec: ModelSpec[Any, Any], data_dir: Path, run_id: str, client: MlflowClient) -> Path:
    """Put the hold-out stored in run `run_id` at its place under `data_dir` (both files
    moved in only once downloaded); returns the path."""
    path = holdout_path(data_dir, spec.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        try:
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=HOLDOUT_DIR,
                    dst_path=tmp,
                    tracking_uri=client.tracking_uri,
                )
            )
        except (MlflowException, OSError) as exc:
            raise HoldoutError(
                f"{spec.key}: cannot download the stored hold-out (run {run_id}): {exc}"
            ) from exc
        for name in (path.name, path.with_suffix(".json").name):
            if not (folder / name).exists():
                raise HoldoutError(f"{spec.key}: run {run_id} holds no {HOLDOUT_DIR}/{name}")
        shutil.move(folder / path.name, path)
        shutil.move(folder / path.with_suffix(".json").name, path.with_suffix(".json"))
    return path


def load(key: str, data_dir: Path) -> Holdout:
    """The frozen hold-out of model `key`, after checking the file is the one frozen."""
    path = holdout_path(data_dir, key)
    sidecar = path.with_suffix(".json")
    if not path.exists() or not sidecar.exists():
        raise HoldoutError(
            f"{key}: no frozen hold-out at {path} (or its {sidecar.name}); "
            f"run `prepiq holdout freeze --model {key}` or `dvc pull`"
        )
    meta = json.loads(sidecar.read_text())
    actual = file_sha256(path)
    if actual != meta.get("sha256"):
        raise HoldoutError(
            f"{key}: {path} changed since it was frozen (sha256 {actual[:12]}, sidecar says "
            f"{str(meta.get('sha256'))[:12]}); restore it with `dvc checkout {path}` or "
            "re-freeze it on purpose"
        )
    try:
        data = joblib.load(path)
    except Exception as exc:  # a class renamed since freezing, a truncated file
        raise HoldoutError(f"{key}: cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return Holdout(data=data, meta=meta, path=path)


def ensure(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    refresh: bool = False,
    client: MlflowClient | None = None,
) -> Holdout:
    """The model's hold-out: the one stored in MLflow (downloaded when the local copy is
    missing or another), else the local copy (then stored), else frozen now from the
    context's snapshot; frozen anew whenever `refresh` asks."""
    client = client or MlflowClient()
    path = holdout_path(ctx.data_dir, spec.key)
    if refresh:
        freeze(spec, ctx, client)
        return load(spec.key, ctx.data_dir)
    found = stored(spec, client)
    if found is not None:
        run_id, sha256 = found
        if not (path.exists() and _sidecar_sha(path) == sha256):
            download(spec, ctx.data_dir, run_id, client)
        frozen = load(spec.key, ctx.data_dir)
        if frozen.sha256 != sha256:
            raise HoldoutError(
                f"{spec.key}: the hold-out of run {run_id} has sha256 {frozen.sha256[:12]}, "
                f"the registered model names {sha256[:12]}"
            )
        return frozen
    if path.exists():
        frozen = load(spec.key, ctx.data_dir)  # checked before it is stored
        store(spec, path, client)
        return frozen
    freeze(spec, ctx, client)
    return load(spec.key, ctx.data_dir)


def _sidecar_sha(path: Path) -> str | None:
    try:
        return str(json.loads(path.with_suffix(".json").read_text())["sha256"])
    except (OSError, ValueError, KeyError):
        return None
