"""The serving image's dependency set is complete. A clean venv gets exactly
requirements-serving.lock and the source the Dockerfile's `serving-builder` stage copies (as
the image gets them, minus Docker, which does not run here); `prepiq serve`, the image's
command, started from it on the small training run's models becomes ready and answers every
prediction route. Its registry is a real `mlflow server` reached over HTTP, as the compose
file's serving container reaches it, so the registry reads run on mlflow-skinny too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from core.config import OFFLINE_ENV, PROJECT_ROOT, get_settings
from core.net import free_port
from tests.conftest import POSTGRES_SERVER
from tests.serving_support import as_service, service_env, started
from training.models import MODELS

SERVING_LOCK = PROJECT_ROOT / "requirements-serving.lock"
PLATFORM_LOCK = PROJECT_ROOT / "requirements.lock"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
READY_TIMEOUT_S = 300.0
PROJECT_DIST = "prepiq-ml"
# Installed by venv itself, never pinned.
VENV_TOOLS = {"pip"}

PRODUCTION_CLIENTS = """
import sys
from limits.storage import storage_from_string
from mlflow import MlflowClient
from core.database import get_engine
get_engine(sys.argv[1]).connect().close()
storage_from_string("redis://127.0.0.1:6379")
assert MlflowClient(sys.argv[2], sys.argv[2]).search_registered_models()
"""

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def pins(lock: Path) -> dict[str, str]:
    """A lock file's `name==version` lines, by normalised name."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[normalise(name)] = version.strip()
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_sources() -> list[str]:
    """What the Dockerfile's serving-builder stage copies from the build context."""
    stage = re.search(
        r"^FROM \S+ AS serving-builder\n(.*?)^FROM ", DOCKERFILE.read_text(), re.M | re.S
    )
    assert stage, "the Dockerfile has no serving-builder stage"
    sources: list[str] = []
    for line in stage.group(1).splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


Command = Sequence[str | Path]


def run(command: Command, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return str(done.stdout)


def test_serving_lock_agrees_with_the_platform_lock() -> None:
    serving, platform = pins(SERVING_LOCK), pins(PLATFORM_LOCK)
    # setuptools: torch needs it, and the platform lock (a plain `pip freeze`) omits it.
    differ = {
        name: (version, platform.get(name))
        for name, version in serving.items()
        if platform.get(name) != version and name != "setuptools"
    }
    assert not differ, f"serving pins that differ from requirements.lock: {differ}"
    for left_out in ("prefect", "optuna", "great-expectations", "dvc", "implicit", "mlflow"):
        assert left_out not in serving, f"{left_out} is not needed to serve"


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean venv with the serving lock and the image's source subset installed as the
    Dockerfile installs them (torch first: its pin takes the CPU wheel, as in the Makefile).
    Returns (venv, source folder). `--no-compile`: the test never imports most of it twice,
    and byte-compiling torch and transformers doubled the install time."""
    root = tmp_path_factory.mktemp("serving-image")
    venv, app = root / "venv", root / "app"
    run([sys.executable, "-m", "venv", venv])
    pip: list[str | Path] = [
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
    ]
    torch = pins(SERVING_LOCK)["torch"]
    run([*pip, f"torch=={torch}"])
    run([*pip, "-r", SERVING_LOCK])
    for source in serving_sources():
        if source == SERVING_LOCK.name:
            continue
        if (PROJECT_ROOT / source).is_dir():
            shutil.copytree(
                PROJECT_ROOT / source, app / source, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            app.mkdir(exist_ok=True)
            shutil.copy2(PROJECT_ROOT / source, app / source)
    run([*pip, "--no-deps", "--no-build-isolation", "-e", app])
    return venv, app


def test_the_serving_venv_holds_exactly_the_lock(serving_venv: tuple[Path, Path]) -> None:
    venv, _ = serving_venv
    python = venv / "bin" / "python"
    # Every requirement of every locked package is met; the project itself declares the
    # whole platform (training's stack too), which the image leaves out on purpose.
    check = subprocess.run(
        [python, "-m", "pip", "check"], check=False, capture_output=True, text=True
    )
    unmet = [line for line in check.stdout.splitlines() if not line.startswith(f"{PROJECT_DIST} ")]
    assert not unmet, unmet
    listed = run([python, "-m", "pip", "list", "--format=freeze", "--exclude", PROJECT_DIST])
    installed = {
        normalise(line.split("==")[0]): line.split("==")[1]
        for line in listed.splitlines()
        if normalise(line.split("==")[0]) not in VENV_TOOLS
    }
    assert installed == pins(SERVING_LOCK), "the lock misses a package pip pulled in"


def test_the_service_starts_from_the_serving_venv_and_predicts(
    serving_venv: tuple[Path, Path], served_models: str, student: str, tmp_path: Path
) -> None:
    venv, app = serving_venv
    bin_dir = venv / "bin"
    # What the service below does not touch: the PostgreSQL driver (the served source is
    # SQLite), a Redis rate-limit storage (built, not connected) and the registry read from
    # its database instead of the server.
    tracking_store = get_settings().resolved_tracking_uri
    run(
        [bin_dir / "python", "-c", PRODUCTION_CLIENTS, f"{POSTGRES_SERVER}/postgres", tracking_store],
        cwd=app, env=clean_env(bin_dir, tmp_path),
    )  # fmt: skip

    mlflow_port, serve_port = free_port(), free_port()
    registry = f"http://127.0.0.1:{mlflow_port}"
    mlflow_server: list[str | Path] = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_store,
        "--artifacts-destination", str(tmp_path / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
    ]  # fmt: skip
    env = {
        **clean_env(bin_dir, tmp_path),
        **service_env(served_models),
        "BENTOML_HOME": str(tmp_path / "bentoml"),  # empty: the champions come from MLflow
        "MLFLOW_TRACKING_URI": registry,
    }
    base = f"http://127.0.0.1:{serve_port}"
    with (
        started(mlflow_server, {**os.environ, **OFFLINE_ENV}, tmp_path / "mlflow.log", f"{registry}/health"),
        started(
            [bin_dir / "prepiq", "serve", "--host", "127.0.0.1", "--port", str(serve_port)],
            env, tmp_path / "serve.log", f"{base}/readyz",
        ),
        httpx.Client(base_url=base, headers=as_service(), timeout=60) as http,
    ):  # fmt: skip
        status = http.get("/api/v1/ml/models/status").json()
        assert status["ready"] is True and len(status["models"]) == len(MODELS)
        for model in status["models"]:  # fetched from the registry over HTTP
            assert "champion" in model["aliases"], model
            assert model["main_metric_value"] is not None, model
        for route, body in (
            ("/api/v1/ml/predict/progress", {"user_id": student}),
            ("/api/v1/ml/predict/focus-areas", {"user_id": student}),
            ("/api/v1/ml/recommend/topics", {"user_id": student, "top_k": 3}),
            ("/api/v1/ml/rank/questions", {"subject_id": 1, "top_k": 3}),
            # A question never seen: the ranker encodes it with the packaged MiniLM.
            ("/api/v1/ml/rank/questions", {"subject_id": 1, "questions": [
                {"text": "A question never set before about nothing", "topic_id": 1}]}),
        ):  # fmt: skip
            answer = http.post(route, json=body)
            assert answer.status_code == 200, (route, answer.text)


def clean_env(bin_dir: Path, tmp_path: Path) -> dict[str, str]:
    """An environment that leaks nothing of the platform's venv (no PYTHONPATH, its own
    PATH and PREPIQ_HOME); the BLAS switches this machine needs pass through."""
    kept = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_") or k in ("LANG", "TZ")}
    return {
        **kept,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREPIQ_HOME": str(tmp_path / "prepiq_home"),
        "PREPIQ_LOG_FORMAT": "json",
    }
