"""What serving must not load: the modules only training needs (tuning, Lightning, the
generic run and its helpers) and each model's training-side modules. Shared by the
fresh-interpreter import tests of serving and of each model's `inference` module."""

from __future__ import annotations

TRAINING_ONLY = (
    "optuna",
    "optuna_integration",
    "lightning",
    "pytorch_lightning",
    "training.runs",
    "training.tuning",
    "training.tracking",
    "training.reports",
    "training.model_spec",
    "training.models",
    "training.metrics",
    "training.splits",
    "training.slices",
)
TRAINING_SIDE = ("data", "estimator", "evaluation", "monitoring", "params", "spec")


def forbidden_for(*packages: str) -> tuple[str, ...]:
    """The training-only modules, and the training side of each model package given."""
    return (*TRAINING_ONLY, *(f"{p}.{m}" for p in packages for m in TRAINING_SIDE))
