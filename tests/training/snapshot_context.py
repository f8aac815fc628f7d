"""The training context the model packages' tests train in: the small seeded snapshot,
its generator truth, seed 42 and the given params (each package's small overlay)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from training.model_spec import TrainingContext


def snapshot_context(
    snapshot: Path, truth_dir: Path, as_of: datetime, params: dict[str, Any]
) -> TrainingContext:
    return TrainingContext(
        snapshot_dir=snapshot,
        data_dir=snapshot.parent,
        as_of=as_of,
        params=params,
        seed=42,
        truth_dir=truth_dir,
    )
