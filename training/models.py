"""The four models' specs by their CLI name, in the order they train and are reported in
(training, the promotion gate, monitoring and the CLI read this; serving reads only
`training.catalog.cards`), and the context they train in."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from core.config import get_settings, load_params
from features.snapshot import RAW_DIR
from training.catalog import cards, members
from training.model_spec import ModelSpec, TrainingContext


def _specs() -> dict[str, ModelSpec[Any, Any]]:
    found: dict[str, ModelSpec[Any, Any]] = {}
    for card, spec in zip(cards().values(), members("spec", "SPEC", ModelSpec), strict=True):
        if spec.card is not card:
            raise TypeError(f"the spec of {card.key} does not carry its inference module's CARD")
        found[card.key] = spec
    return found


MODELS: dict[str, ModelSpec[Any, Any]] = _specs()


def training_context(
    data_dir: Path,
    as_of: datetime,
    *,
    params: dict[str, Any] | None = None,
    trials: int | None = None,
    students: int | None = None,
) -> TrainingContext:
    """The context every model trains and is evaluated in: the snapshot under `data_dir`,
    the params (params.yaml unless given, every model's section validated: `prepiq reproduce` passes the ones a run
    logged), their seed, and the generator's truth folder (absent on a real Supabase)."""
    params = load_params() if params is None else params
    ctx = TrainingContext(
        snapshot_dir=data_dir / RAW_DIR,
        data_dir=data_dir,
        as_of=as_of,
        params=params,
        seed=int(params.get("seed", 42)),
        trials=trials,
        truth_dir=get_settings().ground_truth_dir,
        students=students,
    )
    for spec in MODELS.values():  # a wrong key in any model's section fails before any work
        spec.params(ctx)
    return ctx
