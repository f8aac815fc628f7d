"""Bad input to the CLI gets one line naming the problem and exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from features.migrate import head_revision
from prepiq.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["seed", "--students", "-5"], "--students"),
        (["seed", "--students", "many"], "--students"),
        (["seed", "--days", "10"], "--days"),
        (["seed", "--end-date", "2026-13-01"], "--end-date"),
        (["seed", "--bogus"], "--bogus"),
        (["db", "upgrade", "--url", "mysql://u:secret@db/x"], "mysql"),
        (["db", "upgrade", "--url", "not a url"], "not a database URL"),
        (["db", "upgrade", "--url", "postgresql://u:secret@127.0.0.1:1/x"], "127.0.0.1:1/x"),
        (["seed", "--url", "postgresql+psycopg://u@127.0.0.1:1/x"], "127.0.0.1:1/x"),
        (["nonsense"], "nonsense"),
        (["reproduce", "--model", "all", "--version", "1"], "name one model"),
        (["reproduce", "--model", "focus-area", "--version", "0"], "--version"),
        (["reproduce", "--model", "focus-area", "--version", "1", "--into", "data"], "live data"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    code, _out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert names in lines[0]
    assert "Traceback" not in err
    assert "secret" not in err  # passwords never reach the terminal


def test_seed_refuses_a_source_without_the_contract(
    capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    code, _out, err = run(capsys, "seed", "--students", "5", "--url", sqlite_url)
    assert code == 2
    assert "prepiq db upgrade" in err


@pytest.mark.parametrize(
    "command",
    [[], ["db"], ["db", "upgrade"], ["db", "downgrade"], ["db", "current"], ["seed"], ["ui"]],
)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _err = run(capsys, *command, "--help")
    assert code == 0
    assert "Usage:" in out


def test_installed_entry_point_prints_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prepiq.cli", "seed", "--students", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("prepiq seed: error:")
    assert "Traceback" not in result.stderr


def test_db_upgrade_then_current(capsys: pytest.CaptureFixture[str], pg_url: str) -> None:
    code, out, _ = run(capsys, "db", "upgrade", "--url", pg_url)
    assert code == 0
    head = head_revision()  # the newest migration (0002: model_predictions' unique index)
    assert f"revision {head}" in out
    code, out, _ = run(capsys, "db", "current", "--url", pg_url)
    assert code == 0
    assert out.startswith(head)
