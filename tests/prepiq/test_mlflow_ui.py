"""`prepiq ui`, as ops use it: a real `prepiq ui` process on the small training run's
tracking store, opened in headless Chromium (Debian's `chromium`, driven by Playwright with
the system executable: no browser download), the same command on a PostgreSQL store, a
busy port, and stopping by SIGTERM or Ctrl+C without leaving a server behind.

The browser's screenshot of the Models page is saved as a test artifact: in the test's
tmp dir and copied to $PREPIQ_TEST_ARTIFACTS (default: test-artifacts/ in the repository,
ignored by git)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # ships no stubs
import pytest
from mlflow import MlflowClient
from playwright.sync_api import Page, expect, sync_playwright

from core.config import PROJECT_ROOT, Settings, get_settings
from core.exceptions import UnsupportedURLError
from core.net import free_port
from prepiq.mlflow_ui import server_command, store_uri
from registry.aliases import CHALLENGER, CHAMPION, alias_version
from training.models import MODELS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
READY_TIMEOUT_S = 180.0  # the server starts in 4 s on an idle machine, 25 s under load
STOP_TIMEOUT_S = 30.0
UI_TIMEOUT_MS = 60_000
PREPIQ = Path(sys.executable).with_name("prepiq")  # the console script ops run
ARTIFACTS = Path(os.environ.get("PREPIQ_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))


@dataclass
class RunningUI:
    """A `prepiq ui` process, its base URL, and every process it started."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path
    children: list[psutil.Process]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: signal.Signals) -> int:
        """Send `sig` to `prepiq ui` alone (as a supervisor or Ctrl+C would); its exit code."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def orphans(self) -> list[str]:
        """The processes `prepiq ui` started that still run."""
        return [" ".join(p.cmdline()[:4]) for p in self.children if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@contextmanager
def prepiq_ui(tracking_uri: str, folder: Path) -> Iterator[RunningUI]:
    """`prepiq ui` on a free port against `tracking_uri` (PREPIQ_HOME stays the session's,
    where training wrote the artifacts), ready to answer. Whatever is still running at the
    end is killed."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    log = folder / "prepiq-ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PREPIQ), "ui", "--port", str(port)],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ui = RunningUI(process, f"http://127.0.0.1:{port}", log, [])
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _healthy(ui.base):
            if process.poll() is not None:
                pytest.fail(f"prepiq ui exited {process.returncode}: {ui.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready within {READY_TIMEOUT_S:g} s: {ui.output()[-3000:]}")
            time.sleep(0.5)
        ui.children = psutil.Process(process.pid).children(recursive=True)
        yield ui
    finally:
        if process.poll() is None:
            process.kill()
        for child in ui.children:
            with suppress(psutil.NoSuchProcess):
                child.kill()  # kill() checks the process is still the one started
        process.wait(timeout=STOP_TIMEOUT_S)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def assert_offline(ui: RunningUI) -> None:
    """The server runs with the offline switches, and without MLflow's job runner (whose
    huey consumers would outlive it)."""
    for child in ui.children:
        env = child.environ()
        assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true"
        assert env.get("DO_NOT_TRACK") == "true"
        assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
    assert not any("huey" in " ".join(p.cmdline()) for p in ui.children)


def assert_stops_cleanly(ui: RunningUI, sig: signal.Signals) -> None:
    """`sig` to `prepiq ui` stops it with exit code 0, and the MLflow server and its
    uvicorn worker with it; the port is free again."""
    commands = [" ".join(p.cmdline()) for p in ui.children]
    assert any("-m mlflow server" in c for c in commands), commands
    assert any("-m uvicorn" in c for c in commands), commands
    assert ui.stop(sig) == 0, ui.output()[-3000:]
    assert ui.orphans() == []
    port = int(ui.base.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    assert "Traceback" not in ui.output()


# -- the UI after a small training run, in a browser ----------------------------------------


@pytest.fixture
def promoted_store(served_models: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A copy of the small training run's tracking store in which each model's newest
    version is `champion`, with the aliases the promotion gate leaves (champion set,
    challenger removed). A copy, because the serving tests rely on the session store
    having no champion; its artifact locations still point at the session's artifacts.
    Returns the copy's URI and the champion version of each registered model."""
    source = get_settings().resolved_tracking_uri.removeprefix("sqlite:///")
    copy = tmp_path / "mlflow.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    uri = f"sqlite:///{copy}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champions = {}
    for spec in MODELS.values():
        version = alias_version(client, spec.name, CHAMPION)
        version = version or alias_version(client, spec.name, CHALLENGER)
        assert version is not None, f"{spec.name} has no trained version"
        client.set_registered_model_alias(spec.name, CHAMPION, version)
        client.delete_registered_model_alias(spec.name, CHALLENGER)
        champions[spec.name] = version
    return uri, champions


@contextmanager
def chromium_page(requests: list[str]) -> Iterator[Page]:
    """A page of Debian's headless Chromium; the URL of every request it makes is
    appended to `requests`."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on("request", lambda request: requests.append(request.url))
            yield page
        finally:
            browser.close()


def dismiss_overlays(page: Page) -> None:
    """Close what MLflow 3.17 opens over the page on a first visit: the new-registry-UI
    promotion dialog and the assistant panel."""
    dialog = page.get_by_role("dialog")
    try:
        dialog.wait_for(state="visible", timeout=5_000)
    except Exception:  # shown once per browser profile; a fresh profile normally gets it
        pass
    else:
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_be_hidden()
    assistant = page.get_by_role("button", name="Close", exact=True)
    if assistant.count():
        assistant.first.click()


def save_screenshot(page: Page, folder: Path, name: str) -> Path:
    """The page as `name` in the test's folder, copied to the artifacts folder."""
    path = folder / name
    page.screenshot(path=path, full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, ARTIFACTS / name)
    return path


@pytest.mark.slow
def test_the_ui_lists_the_four_models_with_their_champion_and_stops_on_sigterm(
    promoted_store: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, champions = promoted_store
    requests: list[str] = []
    with prepiq_ui(uri, tmp_path) as ui:
        assert_offline(ui)
        # The registry as the UI server reads it, and the champions' training artifacts
        # (params.yaml of their run) served from where training wrote them.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        for name, version in champions.items():
            run_id = client.get_model_version(name, version).run_id
            listed = httpx.get(
                f"{ui.base}/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": run_id}
            ).json()
            assert "params.yaml" in {f["path"] for f in listed["files"]}, listed
            params = httpx.get(
                f"{ui.base}/get-artifact", params={"path": "params.yaml", "run_uuid": run_id}
            )
            assert params.status_code == 200 and "seed" in params.text

        with chromium_page(requests) as page:
            page.goto(f"{ui.base}/#/models")
            dismiss_overlays(page)
            for name, version in champions.items():
                row = page.get_by_role("row").filter(
                    has=page.get_by_role("link", name=name, exact=True)
                )
                # The "Aliased versions" column: "@ champion : Version N", a link.
                alias = row.get_by_role("link", name=f"{CHAMPION} : Version {version}")
                expect(alias).to_be_visible()
            shot = save_screenshot(page, tmp_path, "mlflow-ui-models.png")
            assert shot.stat().st_size > 10_000

        assert_stops_cleanly(ui, signal.SIGTERM)
    # Offline: the page asked nothing of any host but the UI's own.
    assert requests and all(r.startswith(ui.base) for r in requests), {
        r for r in requests if not r.startswith(ui.base)
    }


# -- PostgreSQL, a busy port, Ctrl+C --------------------------------------------------------


@pytest.mark.postgres
def test_the_ui_serves_a_postgresql_store_without_showing_its_password(
    make_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    # Trust auth ignores the password, so a fake one shows where it would leak.
    uri = make_pg_database().replace("postgres@", "postgres:s3cret-pw@", 1)
    name = MODELS["focus-area"].name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates MLflow's schema
    client.create_registered_model(name)
    version = str(client.create_model_version(name, source=str(tmp_path)).version)
    client.set_registered_model_alias(name, CHAMPION, version)

    with prepiq_ui(uri, tmp_path) as ui:
        got = httpx.get(
            f"{ui.base}/api/2.0/mlflow/registered-models/get", params={"name": name}
        ).json()
        assert got["registered_model"]["aliases"] == [{"alias": CHAMPION, "version": version}]
        assert "s3cret-pw" not in ui.output()
        assert all("s3cret-pw" not in " ".join(p.cmdline()) for p in ui.children)
        assert_stops_cleanly(ui, signal.SIGINT)  # Ctrl+C
    assert "127.0.0.1:5432/prepiq_test_" in ui.output()  # the redacted store was named


def prepiq_ui_error(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `prepiq ui ARGS`, which must fail as a user error (exit 2); its stderr."""
    result = subprocess.run(
        [str(PREPIQ), "ui", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def test_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        error = prepiq_ui_error("--port", str(port))
    assert error == (
        f"prepiq: error: port {port} on 127.0.0.1 is in use (Address already in use): "
        "stop what listens there or choose another with --port"
    )


def test_a_tracking_server_uri_is_refused() -> None:
    error = prepiq_ui_error(
        env={**os.environ, "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}
    )
    assert error == (
        "prepiq: error: MLFLOW_TRACKING_URI http://mlflow.internal:5000 is a tracking server "
        "already: open it in a browser"
    )


def test_the_store_is_a_database_and_artifacts_resolve_where_training_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgres://ops:pw@db.internal:5432/mlflow")
    settings = Settings()
    command, env = server_command(settings, 5000)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg://ops:pw@db.internal:5432/mlflow"
    assert "pw" not in " ".join(command)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    # training.tracking.experiment puts each experiment's artifacts in this folder.
    root = (settings.home / "mlartifacts").as_uri()
    assert command[command.index("--default-artifact-root") + 1] == root
    assert command[command.index("--artifacts-destination") + 1] == root

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///srv/mlruns")
    with pytest.raises(UnsupportedURLError, match="unsupported database URL scheme 'file'"):
        store_uri(Settings())
