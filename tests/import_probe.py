"""What serving must not load: the modules only training needs (tuning, Lightning, the
generic run and its helpers) and each model's training-side modules. Shared by the
fresh-interpreter import tests of serving and of each model's `inference` module."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.config import PROJECT_ROOT

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


def loaded_by(module: str) -> set[str]:
    """Every module in `sys.modules` after importing `module` in a fresh interpreter (the
    test's own has loaded everything)."""
    probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
        timeout=300,
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert module in loaded
    return loaded


def forbidden_among(loaded: set[str], *packages: str) -> list[str]:
    """The modules of `loaded` that `forbidden_for(*packages)` names, submodules too."""
    forbidden = forbidden_for(*packages)
    return sorted(
        name for name in loaded if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
