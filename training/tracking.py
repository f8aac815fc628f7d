"""MLflow for training runs: the tracking store from the settings, one experiment per
model with its artifacts under PREPIQ_HOME, and the lineage every run records (git
commit, the DVC data version it pushed and where, the snapshot's content hash and point
in time, params.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient

from core.config import PROJECT_ROOT, Settings, get_settings
from core.exceptions import DataVersionError
from core.logging import get_logger
from features.snapshot import read_manifest
from features.versioning import dvc_hash, push_snapshot

log = get_logger("prepiq.tracking")
MAX_TAG_CHARS = 500  # a failure's message on a tag; the log has it whole


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the configured tracking store; returns its URI."""
    settings = settings or get_settings()
    uri = settings.resolved_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment(
    name: str, settings: Settings | None = None, client: MlflowClient | None = None
) -> str:
    """The id of the experiment `name` (in `client`'s store, else the configured one),
    created with artifacts under PREPIQ_HOME when the store is local (a tracking server
    keeps its own artifact root)."""
    settings = settings or get_settings()
    client = client or MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if not str(client.tracking_uri).startswith("http"):
        location = (settings.home / "mlartifacts" / name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit the code runs from, marked `-dirty` when the work tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def lineage(snapshot_dir: Path) -> dict[str, Any]:
    """Tags that say what a run trained on and with which code (the data version itself
    comes from `publish_snapshot`)."""
    snapshot = read_manifest(snapshot_dir)
    tags: dict[str, Any] = {"git_commit": git_commit()}
    if snapshot is not None:
        tags["snapshot_content_hash"] = snapshot.content_hash
        tags["snapshot_as_of"] = snapshot.as_of
        tags["source"] = snapshot.source
    return tags


def publish_snapshot(
    snapshot_dir: Path, settings: Settings | None = None, repo_root: Path = PROJECT_ROOT
) -> dict[str, str]:
    """Push the snapshot a run trains on to the DVC remote; returns the run's tags:
    `data_version` (the DVC hash of exactly what was pushed), `data_remote` (where) and
    `data_pushed` ("true", or "failed: why").

    A failed push stops the run when PREPIQ_DVC_REMOTE_URL names the remote (someone asked
    for the data to be there); with the repository's default remote it is a warning and
    the run records it, so training on a machine without a usable remote still works."""
    settings = settings or get_settings()
    try:
        pushed = push_snapshot(snapshot_dir, settings.dvc_remote_url, repo_root)
    except DataVersionError as exc:
        if settings.dvc_remote_url:
            raise DataVersionError(
                f"{exc}; training stopped, as PREPIQ_DVC_REMOTE_URL is set"
            ) from exc
        log.warning("snapshot not pushed", snapshot=str(snapshot_dir), error=str(exc))
        tags = {"data_pushed": f"failed: {exc}"[:MAX_TAG_CHARS]}
        try:  # still say which data it was, though no remote holds it
            tags["data_version"] = dvc_hash(snapshot_dir, repo_root)
        except Exception as hash_exc:  # outside a DVC repository there is no DVC hash
            tags["data_version"] = f"unavailable: {type(hash_exc).__name__}"
        return tags
    log.info(
        "snapshot pushed",
        data_version=pushed.data_version,
        remote=pushed.remote,
        new_objects=pushed.transferred,
    )
    return {
        "data_version": pushed.data_version,
        "data_remote": pushed.remote,
        "data_pushed": "true",
    }


def params_text(params: dict[str, Any], path: Path) -> str:
    """What a run logs as its `params.yaml`: the file itself (comments and all) when it
    still holds the params the run uses, else those params written out (the file changed
    since the flow read it), so the artifact always rebuilds the run's context."""
    text = path.read_text() if path.exists() else ""
    if text and yaml.safe_load(text) == params:
        return text
    return yaml.safe_dump(params, sort_keys=False)


def pinned_requirements(
    packages: list[str], lock: Path = PROJECT_ROOT / "requirements.lock"
) -> list[str]:
    """`name==version` for each package, as pinned in the lock (so a logged model asks for
    exactly what it was trained with, without MLflow inferring it in a subprocess)."""
    pins = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return [f"{p}=={pins[p.lower().replace('_', '-')]}" for p in packages]


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`params.yaml` sections as MLflow params: `focus_area.search_space.rf_trees` -> value."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out |= flat_params(value, name)
        else:
            out[name] = value
    return out
