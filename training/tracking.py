"""MLflow for training runs: the tracking store from the settings, one experiment per
model with its artifacts under PREPIQ_HOME, and the lineage every run records (git
commit, DVC data version, snapshot and feature hashes, params.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from core.config import PROJECT_ROOT, Settings, get_settings
from features.snapshot import RAW_DIR, read_manifest


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


def lineage(data_dir: Path) -> dict[str, Any]:
    """Tags that say exactly what a run trained on and with which code."""
    from features.versioning import dvc_hash

    snapshot = read_manifest(data_dir / RAW_DIR)
    tags: dict[str, Any] = {"git_commit": git_commit()}
    try:
        tags["data_version"] = dvc_hash(data_dir / RAW_DIR)
    except Exception as exc:  # outside a DVC repository the hash cannot be computed
        tags["data_version"] = f"unavailable: {type(exc).__name__}"
    if snapshot is not None:
        tags["snapshot_content_hash"] = snapshot.content_hash
        tags["snapshot_as_of"] = snapshot.as_of
        tags["source"] = snapshot.source
    return tags


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
