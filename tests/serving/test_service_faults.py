"""Faults against a real `prepiq serve`: `kill -9` of the whole process group under load
loses no answered prediction (each is in `model_predictions` exactly once after the
restart replays the spool), a `kill -9` of the parent alone takes its worker with it so
the port is free at once, and the gateway's 504 and concurrency 429 for real (requests
held by a locked source table)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest

from core.config import get_settings
from core.net import free_port
from features.schema import CONTRACT_TABLES
from tests.conftest import migrated_engine
from tests.serving_support import (
    as_service,
    await_ready,
    log_tail,
    service_env,
    stored_predictions,
)

READY_TIMEOUT_S = 240.0
FOCUS_ROUTE = "/api/v1/ml/predict/focus-areas"


def _env(source_url: str, spool_dir: Path, **extra: str) -> dict[str, str]:
    settings = get_settings()
    return {
        **os.environ,
        **service_env(source_url),
        "PREPIQ_HOME": str(settings.home),
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "PREPIQ_SERVING_RATE_LIMIT": "1000000/minute",
        # Only the spool can save the predictions: the writer would insert at shutdown.
        "PREPIQ_SERVING_LOG_BATCH_SIZE": "1000000",
        "PREPIQ_SERVING_LOG_FLUSH_SECONDS": "3600",
        "PREPIQ_SERVING_SPOOL_DIR": str(spool_dir),
        **extra,
    }


def _serve(
    port: int, env: dict[str, str], log: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """`prepiq serve` on `port`, in a process group of its own, added to `processes` (which
    the fixture stops, even when it never gets ready), once /readyz answers 200."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prepiq.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.append(process)
    await_ready(
        f"http://127.0.0.1:{port}/readyz", process.poll, lambda: log_tail(log), READY_TIMEOUT_S
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started
        process.wait(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        _stop(process)


def _load(base: str, student: str, answered: list[str], stop: threading.Event) -> None:
    """One client sending focus-area predictions until `stop` or the server dies;
    `answered` gets the request id of every 200."""
    with httpx.Client(base_url=base, headers=as_service(), timeout=30) as http:
        while not stop.is_set():
            request_id = f"kill-{uuid.uuid4().hex[:16]}"
            try:
                answer = http.post(
                    FOCUS_ROUTE, json={"user_id": student}, headers={"X-Request-ID": request_id}
                )
            except httpx.HTTPError:
                return
            if answer.status_code == 200:
                answered.append(request_id)


def test_kill_9_under_load_loses_no_answered_prediction_and_leaves_no_orphan(
    served_models: str,
    student: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(served_models, tmp_path / "spool")
    log = tmp_path / "serve.log"
    _serve(port, env, log, processes)

    answered: list[str] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_load, args=(base, student, answered, stop), daemon=True)
        for _ in range(4)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 60
    while len(answered) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(processes[0].pid, signal.SIGKILL)  # the server and its worker, mid-load
    processes[0].wait(timeout=30)
    stop.set()
    for client in clients:
        client.join(timeout=60)
        assert not client.is_alive()  # each saw the server go
    assert len(answered) >= 150
    assert stored_predictions(served_models, answered) == []  # none written before the kill

    # Restarted at once on the same port: it replays the dead worker's spool.
    _serve(port, env, log, processes)
    deadline = time.monotonic() + 60
    rows = stored_predictions(served_models, answered)
    while len(rows) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = stored_predictions(served_models, answered)
    assert Counter(r["request_id"] for r in rows) == Counter(answered)  # each exactly once
    status = httpx.get(f"{base}/api/v1/ml/models/status", headers=as_service()).json()
    assert status["prediction_log"]["replayed"] >= len(answered)
    assert status["prediction_log"]["dropped"] == 0

    # kill -9 of the parent alone: the kernel kills its worker too, so the port is free.
    worker = psutil.Process(status["process_id"])
    assert worker.ppid() == processes[1].pid
    os.kill(processes[1].pid, signal.SIGKILL)
    processes[1].wait(timeout=30)
    worker.wait(timeout=30)  # psutil.TimeoutExpired if it outlived its parent
    _serve(port, env, log, processes)  # no "Address already in use"


def test_a_slow_request_gets_504_and_one_past_the_concurrency_limit_429(
    pg_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    migrated_engine(pg_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        pg_url,
        tmp_path / "spool",
        # Long enough for both held requests and the probe to arrive on a loaded machine.
        PREPIQ_SERVING_REQUEST_TIMEOUT_SECONDS="15",
        PREPIQ_SERVING_MAX_CONCURRENCY="2",
        PREPIQ_SERVING_MATERIALISED_STUDENTS="0",  # every request reads the source
    )
    _serve(port, env, tmp_path / "serve.log", processes)
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    answers: list[httpx.Response] = []

    def ask() -> None:
        body = {"user_id": str(uuid.uuid4())}
        answer = httpx.post(f"{base}{FOCUS_ROUTE}", json=body, headers=as_service(), timeout=60)
        answers.append(answer)

    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as watcher:
        tables = ", ".join(t for t in CONTRACT_TABLES if t != "model_predictions")
        locker.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")  # held until rollback
        held = [threading.Thread(target=ask, daemon=True) for _ in range(2)]
        for thread in held:
            thread.start()
        waiting = 0
        deadline = time.monotonic() + 30
        while waiting < 2 and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            waiting = int(row[0]) if row else 0
            time.sleep(0.05)
        assert waiting == 2  # both requests in flight, blocked on the source
        over = httpx.post(
            f"{base}{FOCUS_ROUTE}",
            json={"user_id": str(uuid.uuid4())},
            headers=as_service(),
            timeout=60,
        )
        for thread in held:
            thread.join(timeout=60)
            assert not thread.is_alive()
        locker.rollback()
    assert over.status_code == 429 and over.json()["code"] == "overloaded", over.text
    assert over.headers["retry-after"] == "1"
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(504, "timeout")] * 2
    # The timed-out requests gave their slots back: the next one is answered (an unknown
    # student: 404), not shed.
    after = httpx.post(
        f"{base}{FOCUS_ROUTE}",
        json={"user_id": str(uuid.uuid4())},
        headers=as_service(),
        timeout=60,
    )
    assert after.status_code == 404, after.text
