"""Serving loads the models' names and inference code and nothing of their training: no
Optuna, no Lightning trainer, no dataset building, tuning or evaluation (the layer rule
itself is import-linter's contract in pyproject.toml, run by `make lint`)."""

from __future__ import annotations

from tests.import_probe import forbidden_among, loaded_by
from training.catalog import PACKAGES


def test_importing_the_service_loads_no_training_module() -> None:
    loaded = loaded_by("serving.service")
    assert forbidden_among(loaded, *PACKAGES) == []
    assert {f"{p}.inference" for p in PACKAGES} <= loaded  # what it serves is there
