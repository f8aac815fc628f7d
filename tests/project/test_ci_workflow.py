"""The CI workflow that trains and promotes: scheduled and on demand, it runs the one
script that holds its steps (deploy/ci/train-and-promote.sh, which
tests/registry/test_registry_serving.py runs against a real tracking server) and uploads the gate's
reports. Here: the workflow's shape, and that every command of the script parses."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from core.config import PROJECT_ROOT
from prepiq.cli import main

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "train-and-promote.yml"
SCRIPT = PROJECT_ROOT / "deploy" / "ci" / "train-and-promote.sh"


def workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def steps() -> list[dict[str, Any]]:
    (job,) = workflow()["jobs"].values()
    return list(job["steps"])


def prepiq_commands() -> list[str]:
    """Every `"$prepiq" ...` command line of the script."""
    found = []
    for line in SCRIPT.read_text().splitlines():
        match = re.search(r'"\$prepiq"\s(.*?)(\s\|\|.*)?$', line.strip())
        if match:
            found.append("prepiq " + match.group(1).replace('"$TRIALS"', "5"))
    return found


def test_it_runs_nightly_and_by_hand_with_a_trials_input() -> None:
    triggers = workflow()[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"]
    assert "trials" in triggers["workflow_dispatch"]["inputs"]


def test_it_runs_the_script_and_uploads_the_reports() -> None:
    uses = [s.get("uses", "") for s in steps()]
    assert any(u.startswith("actions/setup-python") for u in uses)
    python = next(s for s in steps() if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"
    runs = [str(s.get("run", "")) for s in steps() if "run" in s]
    assert runs == ["make venv", "deploy/ci/train-and-promote.sh"]
    step = next(s for s in steps() if s.get("run") == "deploy/ci/train-and-promote.sh")
    assert step["env"]["TRIALS"] == "${{ inputs.trials }}"
    upload = next(s for s in steps() if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "data/promotion/" and upload["if"] == "always()"


def test_the_script_trains_then_promotes() -> None:
    commands = prepiq_commands()
    assert commands == ["prepiq train --trials 5", "prepiq train", "prepiq promote --model all"]
    assert SCRIPT.stat().st_mode & 0o111  # executable, as the workflow calls it


@pytest.mark.parametrize("command", prepiq_commands())
def test_every_command_parses(capsys: pytest.CaptureFixture[str], command: str) -> None:
    argv = shlex.split(command)
    assert main([*argv[1:], "--help"]) == 0, capsys.readouterr().err
