"""The fixed, versioned hold-out of each model: what `spec.prepare` built from one snapshot,
frozen to `data/holdout/<key>.joblib` (DVC tracks the folder) with a JSON sidecar, so the
promotion gate scores every champion and challenger on exactly the same examples until
someone refreshes it on purpose (`prepiq holdout freeze`, `prepiq promote --refresh-holdout`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]

from core.exceptions import HoldoutError
from features.snapshot import read_manifest
from training.model_spec import ModelSpec, TrainingContext
from training.runs import load_frames

HOLDOUT_DIR = "holdout"


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


def freeze(spec: ModelSpec, ctx: TrainingContext) -> Path:
    """Build the model's dataset from the context's snapshot and freeze it; returns the
    path. Written beside and renamed into place, so a crash never leaves half a file."""
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


def ensure(spec: ModelSpec, ctx: TrainingContext, refresh: bool = False) -> Holdout:
    """The model's frozen hold-out, frozen now from the context's snapshot when absent
    (or when `refresh` asks for a new one)."""
    path = holdout_path(ctx.data_dir, spec.key)
    if refresh or not path.exists():
        freeze(spec, ctx)
    return load(spec.key, ctx.data_dir)
