"""`prepiq ui`: the MLflow UI on the project's tracking store, for ops.

`mlflow server` starts uvicorn as a child and forwards no signal to it, so stopping the
CLI process alone leaves the server running. The server therefore runs in a process
group of its own, and Ctrl+C or a supervisor's SIGTERM stops the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from core.config import Settings
from core.database import normalise_url
from core.exceptions import ConfigError

HOST = "127.0.0.1"  # the UI has no login: it is never bound to another interface
STOP_GRACE_SECONDS = 10.0
# Ctrl+C, a supervisor, a closed terminal: each stops the server with `prepiq ui`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def store_uri(settings: Settings) -> str:
    """The tracking store the UI reads: a SQLite or PostgreSQL database (the PostgreSQL
    spellings run with psycopg 3, as everywhere in the project), not a tracking server."""
    uri = settings.resolved_tracking_uri
    if uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI {uri} is a tracking server already: open it in a browser"
        )
    return normalise_url(uri).render_as_string(hide_password=False)


def server_command(settings: Settings, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command and its environment. The store URI travels in the
    environment, so a database password never shows in the process list. Artifacts
    resolve where training writes them (PREPIQ_HOME/mlartifacts, see training.tracking),
    and anything uploaded through the UI's server lands there too, not in the cwd."""
    artifacts = (settings.home / "mlartifacts").as_uri()
    env = os.environ.copy()  # carries the offline switches set by Settings.apply_environment
    env["MLFLOW_BACKEND_STORE_URI"] = store_uri(settings)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--default-artifact-root", artifacts, "--artifacts-destination", artifacts,
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return command, env


def require_free_port(port: int) -> None:
    """Fail at once, naming the port, when something already listens there (uvicorn would
    only say so after the server's 10 s start-up, buried in its log)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {HOST} is in use ({exc.strerror}): stop what listens there "
                "or choose another with --port"
            ) from exc


class _StopRequestedError(Exception):
    """One of STOP_SIGNALS reached `prepiq ui`."""


def _request_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequestedError(signal.Signals(signum).name)


def run_server(command: list[str], env: dict[str, str]) -> int:
    """Run the server until it exits or a stop is requested; then stop its whole process
    group. Returns the server's exit code, or 0 after a requested stop."""
    handlers = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    process: subprocess.Popen[bytes] | None = None
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
        return process.wait()
    except _StopRequestedError:
        return 0
    finally:
        # Later signals must not interrupt the clean-up itself.
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)
        if process is not None:
            stop_group(process)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def stop_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to every process of `process`'s group, SIGKILL to what is left after
    `grace` seconds; returns once no process of the group is left."""
    group = process.pid  # start_new_session made the server its group's leader
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, so it does not linger as a zombie
            if not _group_alive(group):
                return
            time.sleep(0.1)
    process.poll()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
