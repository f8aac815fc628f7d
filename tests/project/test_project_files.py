"""The project files that drive the platform from outside (MLproject, dvc.yaml, Makefile)
name commands the CLI really has."""

from __future__ import annotations

import shlex

import pytest
import yaml

from core.config import PROJECT_ROOT
from prepiq.cli import main


def _commands() -> list[str]:
    commands = []
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    commands += [stage["cmd"] for stage in stages.values()]
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(PROJECT_ROOT))  # type: ignore[no-untyped-call]
    for name, entry in project._entry_points.items():
        defaults = {p.name: p.default for p in entry.parameters.values()}
        commands.append(project.get_entry_point(name).compute_command(defaults, storage_dir=None))
    commands += [
        line.strip().removeprefix("$(BIN)/")
        for line in (PROJECT_ROOT / "Makefile").read_text().splitlines()
        if line.strip().startswith("$(BIN)/prepiq")
    ]
    return commands


@pytest.mark.parametrize("command", _commands())
def test_every_command_parses(capsys: pytest.CaptureFixture[str], command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "prepiq"
    assert main([*argv[1:], "--help"]) == 0, capsys.readouterr().err


def test_dvc_train_stage_depends_on_the_snapshot() -> None:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert "data/raw" in stages["train-focus-area"]["deps"]
    # Kept between runs, so `dvc repro` ingests incrementally (tests/pipelines/test_ingest.py runs it).
    assert stages["ingest"]["outs"] == [{"data/raw": {"persist": True}}]


def test_every_model_has_a_dvc_train_stage_on_files_that_exist() -> None:
    from training.models import MODELS

    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    for key in MODELS:
        stage = stages[f"train-{key}"]
        assert stage["cmd"] == f"prepiq train --models {key} --no-ingest"
        assert key.replace("-", "_") in stage["params"]
        for dep in stage["deps"]:
            assert dep.startswith("data/") or (PROJECT_ROOT / dep).exists(), dep
    assert "evaluate" in stages
