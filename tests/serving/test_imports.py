"""Serving loads the models' names and inference code and nothing of their training: no
Optuna, no Lightning trainer, no dataset building, tuning or evaluation (the layer rule
itself is import-linter's contract in pyproject.toml, run by `make lint`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.config import PROJECT_ROOT
from tests.import_probe import forbidden_for
from training.catalog import PACKAGES


def test_importing_the_service_loads_no_training_module() -> None:
    probe = "import json, sys, serving.service; print(json.dumps(sorted(sys.modules)))"
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    forbidden = set(forbidden_for(*PACKAGES))
    assert sorted(loaded & forbidden) == []
    assert {f"{p}.inference" for p in PACKAGES} <= loaded  # what it serves is there
