"""The serving image, built and run on a real Docker engine. No container registry can be
reached here, so the base image is made from Debian's packages (deploy/docker/base-image.sh)
and the build goes through deploy/docker/build.sh (the local torch wheel, no PyTorch index).
The container is run with `--network=host` and given only the tracking URI and the source
URL (with the auth settings every caller needs): it must come up serving every model's
champion, which it fetches from a real `mlflow server` over HTTP (artifacts served too,
PostgreSQL behind it), answer `/readyz` 200, and lose no prediction to `docker stop`.

An engine that answers is used as it is; else `dockerd` is started (and stopped at the end)
when docker.io is installed. The tests skip, saying why, only where no engine can start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from core.config import OFFLINE_ENV, PROJECT_ROOT, get_settings
from core.net import free_port
from tests.conftest import END_DATE, migrated_engine
from tests.serving_support import (
    ServingRun,
    as_service,
    await_ready,
    service_env,
    started,
    stored_predictions,
    train,
    write_small_params,
)
from training.models import MODELS

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# Debian's 20.10 client where both are installed: the newer one on PATH wants a buildx
# plugin for BuildKit that is not there.
DOCKER = shutil.which("/usr/bin/docker") or shutil.which("docker")
IMAGE = "prepiq-serving:test"
ENGINE_START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 300.0
# The compose file's stop_grace_period for the service: what `docker stop -t` waits before
# SIGKILL. The shutdown (drain, flush the prediction log) takes a few seconds.
STOP_TIMEOUT_S = 30


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine that answers: the one running, or dockerd started here."""
    if DOCKER is None:
        pytest.skip("no Docker engine can start: no docker client (apt-get install docker.io)")
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("no Docker engine can start: dockerd is not installed (docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no Docker engine can start: dockerd needs root and this is not")
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        while not engine_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited {process.returncode}"
                    if process.poll() is not None
                    else f"did not answer within {ENGINE_START_TIMEOUT_S:g} s"
                )
                tail = log.read_text(errors="replace")[-2000:]
                pytest.skip(f"no Docker engine can start: dockerd {why}; its log ends:\n{tail}")
            time.sleep(0.5)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # dockerd stops its containers first
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def serving_image(docker_engine: None) -> str:
    """The serving target, built as the README says (base image made when missing; every
    layer is cached between runs on one engine)."""
    done = subprocess.run(
        ["bash", PROJECT_ROOT / "deploy" / "docker" / "build.sh", "serving", "--quiet"],
        env={**os.environ, "DOCKER": str(DOCKER), "TAG": IMAGE},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


@dataclass(frozen=True)
class Champions:
    """A PostgreSQL source, and a tracking server whose registry has a champion of every
    model (artifacts served by the server)."""

    source_url: str
    tracking_uri: str
    versions: dict[str, str]  # model key -> champion version


@pytest.fixture(scope="module")
def champions(
    make_pg_database: Callable[[], str],
    prefect_harness: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Champions]:
    """Every model trained once (one trial) on a small seeded PostgreSQL source and logged
    to a real `mlflow server` on PostgreSQL over HTTP, each version made champion."""
    from mlflow import MlflowClient

    from registry.aliases import CHAMPION
    from synthetic.generator import seed_source
    from training import tracking

    folder = tmp_path_factory.mktemp("docker-champions")
    source_url = make_pg_database()
    seed_source(
        migrated_engine(source_url),
        students=300,
        seed=7,
        days=120,
        end_date=END_DATE,
        truth_dir=folder / "truth",
    )
    port = free_port()
    tracking_uri = f"http://127.0.0.1:{port}"
    mlflow_server: list[str | Path] = [
        Path(sys.executable), "-m", "mlflow", "server",
        "--backend-store-uri", make_pg_database(),
        "--artifacts-destination", str(folder / "mlartifacts"), "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(
            started(
                mlflow_server,
                {**os.environ, **OFFLINE_ENV},
                folder / "mlflow.log",
                f"{tracking_uri}/health",
            )
        )
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        get_settings.cache_clear()
        tracking.configure()
        try:
            write_small_params(folder)
            train(ServingRun(url=source_url, folder=folder))
            client = MlflowClient()
            versions = {}
            for spec in MODELS.values():
                version = str(client.get_model_version_by_alias(spec.name, "challenger").version)
                client.set_registered_model_alias(spec.name, CHAMPION, version)
                versions[spec.key] = version
        finally:
            patch.undo()
            get_settings.cache_clear()
            tracking.configure()
        yield Champions(source_url, tracking_uri, versions)


def container_env(champions: Champions) -> dict[str, str]:
    """Only the tracking URI and the source URL, and the auth settings every caller needs;
    the prediction log is written only when a batch of a million fills or at shutdown."""
    return {
        **service_env(champions.source_url),
        "MLFLOW_TRACKING_URI": champions.tracking_uri,
        "PREPIQ_SERVING_LOG_BATCH_SIZE": "1000000",
    }


def state(name: str) -> dict[str, Any]:
    found = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    assert isinstance(found, dict)
    return found


def logs(name: str) -> str:
    """The container's log, without the test's own /readyz polls."""
    done = docker("logs", name, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    return "\n".join(
        line for line in lines if '"/readyz' not in line and "GET /readyz" not in line
    )[-5000:]


def serve_predict_and_stop(
    image: str, champions: Champions, docker_options: Sequence[str] = ()
) -> None:
    """Run the image, wait for /readyz, predict with every model, `docker stop` it, and
    check every answered prediction's row is in the source's `model_predictions`."""
    name = f"prepiq-serving-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env_options = [f"--env={key}={value}" for key, value in container_env(champions).items()]
    # The image's command on a free port of the host's loopback (the host's network).
    command = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    started_at = time.monotonic()
    docker("run", "--detach", f"--name={name}", "--network=host", *env_options,
           *docker_options, image, *command)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        await_ready(
            f"{base}/readyz",
            lambda: None if state(name)["Running"] else int(state(name)["ExitCode"]),
            lambda: logs(name),
            READY_TIMEOUT_S - (time.monotonic() - started_at),
            every=1,
        )
        print(f"container ready in {time.monotonic() - started_at:.1f} s")

        expected: Counter[str] = Counter()
        with httpx.Client(base_url=base, headers=as_service(), timeout=60) as http:
            status = http.get("/api/v1/ml/models/status").json()
            assert status["ready"] is True, status
            served = {m["key"]: m for m in status["models"]}
            assert set(served) == set(MODELS), status
            for key, model in served.items():
                assert "champion" in model["aliases"], model
                assert str(model["version"]) == champions.versions[key], model
            student = first_student(champions.source_url)
            for route, body in (
                ("/api/v1/ml/predict/progress", {"user_id": student}),
                ("/api/v1/ml/predict/focus-areas", {"user_id": student}),
                ("/api/v1/ml/recommend/topics", {"user_id": student, "top_k": 3}),
                ("/api/v1/ml/rank/questions", {"subject_id": 1, "top_k": 3}),
            ):
                request_id = f"docker-{uuid.uuid4().hex[:12]}"
                answer = http.post(route, json=body, headers={"X-Request-ID": request_id})
                assert answer.status_code == 200, (route, answer.text)
                assert answer.headers["x-request-id"] == request_id
                expected[request_id] = 1
        ids = list(expected)
        assert stored_predictions(champions.source_url, ids) == []  # only shutdown writes

        stopping = time.monotonic()
        docker("stop", f"--time={STOP_TIMEOUT_S}", name, timeout=STOP_TIMEOUT_S + 60)
        stopped_in = time.monotonic() - stopping
        print(f"docker stop took {stopped_in:.1f} s")
        final = state(name)
        # Stopped by its SIGTERM, not killed when the grace period ran out.
        assert stopped_in < STOP_TIMEOUT_S and final["ExitCode"] != 137, (final, logs(name))
        rows = stored_predictions(champions.source_url, ids)
        assert Counter(r["request_id"] for r in rows) == expected, logs(name)
        assert {r["model_name"] for r in rows} == {spec.name for spec in MODELS.values()}
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


def first_student(url: str) -> str:
    """A student of the served source."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT id FROM users ORDER BY id LIMIT 1").scalar())
    finally:
        engine.dispose()


def test_the_serving_image_serves_every_champion_and_stops_losing_no_prediction(
    serving_image: str, champions: Champions
) -> None:
    serve_predict_and_stop(serving_image, champions)
