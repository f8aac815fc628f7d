"""What the serving tests share (tests/serving/test_service.py in-process, tests/serving/test_service_process.py
against a real `bentoml serve`): the settings they serve with, credentials, the error-shape
assertion, and the small real training run whose models they serve (its session fixtures
are in tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from sqlalchemy import create_engine, select

from core.config import PROJECT_ROOT, get_settings
from core.net import free_port
from features.schema import ModelPrediction
from synthetic.small_source import write_small_source_params
from tests.conftest import END_DATE

if TYPE_CHECKING:
    from mlflow import MlflowClient

SECRET = "test-secret-" + "x" * 32
SERVICE_KEY = "service-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
SCHEMA_TEST_KEY = "schema-test-key"  # a caller of its own, so its rate window is its own
# The session has one in-process app (the `serving_app` fixture) and so one limiter
# (memory://) for every module that calls it. Each module spends its budget there under
# keys no other module uses (and the prediction log test's burst under one of its own),
# so no module finds its per-minute window part-spent by whichever module ran before it.
# (Each real `bentoml serve` counts in its own memory: SERVICE_KEY and ADMIN_KEY.)
SERVICE_TEST_KEY = "service-test-key"  # tests/serving/test_service.py
SERVICE_TEST_ADMIN_KEY = "service-test-admin-key"  # tests/serving/test_service.py
PREDICTION_LOG_KEY = "prediction-log-key"  # test_service.py's prediction log test
BAD_INPUT_KEY = "bad-input-key"  # test_service.py's bad-input tests (23 requests)
PROCESS_TEST_KEY = "process-test-key"  # tests/serving/test_service_process.py
PROCESS_TEST_ADMIN_KEY = "process-test-admin-key"  # tests/serving/test_service_process.py
SERVICE_KEYS = (
    SERVICE_KEY,
    SCHEMA_TEST_KEY,
    SERVICE_TEST_KEY,
    PREDICTION_LOG_KEY,
    BAD_INPUT_KEY,
    PROCESS_TEST_KEY,
)
ADMIN_KEYS = (ADMIN_KEY, SERVICE_TEST_ADMIN_KEY, PROCESS_TEST_ADMIN_KEY)
RATE_LIMIT = 60  # per minute and caller
ANONYMOUS_RATE_LIMIT = 30  # per minute and client address, for requests refused a 401
MAX_BODY = 512 * 1024
AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
ERROR_FIELDS = {"error", "code", "field", "request_id"}


@dataclass(frozen=True)
class ServingRun:
    """The small training run the serving tests serve: its source and its folder (the
    params file and data directory a further training of it reuses)."""

    url: str
    folder: Path

    @property
    def params_file(self) -> Path:
        return self.folder / "params.yaml"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"


def service_env(url: str) -> dict[str, str]:
    """The environment the tests serve with (settings are read when the service starts)."""
    return {
        "PREPIQ_SOURCE_URL": url,
        "SUPABASE_JWT_SECRET": SECRET,
        "PREPIQ_SERVING_API_KEYS": ",".join(SERVICE_KEYS),
        "PREPIQ_SERVING_ADMIN_API_KEYS": ",".join(ADMIN_KEYS),
        "PREPIQ_SERVING_RATE_LIMIT": f"{RATE_LIMIT}/minute",
        "PREPIQ_SERVING_ANONYMOUS_RATE_LIMIT": f"{ANONYMOUS_RATE_LIMIT}/minute",
        # Exact at any instant: a test's burst that crosses a minute's edge is still
        # limited at its limit (the default's weighted counters would let one through).
        "PREPIQ_SERVING_RATE_LIMIT_STRATEGY": "moving-window",
        "PREPIQ_SERVING_MAX_BODY_BYTES": str(MAX_BODY),
        # Only a full batch or the shutdown writes the log: the log tests see the latter.
        "PREPIQ_SERVING_LOG_FLUSH_SECONDS": "3600",
    }


write_small_params = write_small_source_params


def train(run: ServingRun, models: list[str] | None = None, *, ingest: bool = True) -> None:
    """Train `models` (all by default; one trial each) of the small run: each new version
    becomes `challenger` in the registry."""
    import pytest

    from pipelines.train import train_flow

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREPIQ_PARAMS_FILE", str(run.params_file))
        get_settings.cache_clear()
        try:
            train_flow(
                models=models,
                trials=1,
                source_url=run.url,
                data_dir=run.data_dir,
                as_of=AS_OF,
                ingest=ingest,
            )
        finally:
            get_settings.cache_clear()


def fetch_to_store(key: str, version: str) -> str:
    """Fetch a registered version into the BentoML store as serving does; returns the tag."""
    from mlflow import MlflowClient

    from registry.model_store import fetch
    from training.models import MODELS

    return str(fetch(MlflowClient(), MODELS[key].name, key, version).tag)


def make_champion(key: str, version: str) -> None:
    """Point the model's `champion` alias at `version` (what a promotion ends with)."""
    from mlflow import MlflowClient

    from training.models import MODELS

    MlflowClient().set_registered_model_alias(MODELS[key].name, "champion", version)


def token(user_id: str, *, expires_in: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    payload = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "exp": datetime.now(UTC) + timedelta(seconds=expires_in),
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def as_user(user_id: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, **claims)}"}


def as_service(key: str = SERVICE_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def admin_user() -> dict[str, str]:
    """A fresh admin caller (any route, anyone's rows) with a rate-limit window of its own,
    so that no case eats another's."""
    return as_user(str(uuid.uuid4()), app_metadata={"role": "admin"})


def as_admin(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


@contextmanager
def aliases_restored() -> Iterator[MlflowClient]:
    """Puts back every model's registry aliases as they were, whatever the block moved
    (aliases it added are deleted), so no test finds them where another left them."""
    from mlflow import MlflowClient

    from registry.aliases import all_aliases
    from training.catalog import cards

    client = MlflowClient()
    names = {card.name for card in cards().values()}
    before = all_aliases(client, names)
    try:
        yield client
    finally:
        now = all_aliases(client, names)
        for name in names:
            for alias in set(now.get(name, {})) - set(before.get(name, {})):
                client.delete_registered_model_alias(name, alias)
            for alias, version in before.get(name, {}).items():
                if now.get(name, {}).get(alias) != version:
                    client.set_registered_model_alias(name, alias, version)


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """`response` is the one error shape with `status` (naming `field` when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_FIELDS, body
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    if field is not None:
        assert body["field"] == field, body
        assert field in body["error"], body
    return dict(body)


Command = Sequence[str | Path]
READY_TIMEOUT_S = 300.0


def await_ready(
    url: str,
    exit_code: Callable[[], int | None],
    output: Callable[[], str],
    timeout: float = READY_TIMEOUT_S,
    every: float = 0.5,
) -> float:
    """Poll `url` until it answers 200 and return the seconds it took; fail the test,
    with the server's `output()`, when `exit_code()` says it exited or after `timeout`."""
    import pytest

    began = time.monotonic()
    while not answers(url):
        code = exit_code()
        if code is not None:
            pytest.fail(f"the server exited {code} before {url} answered 200:\n{output()}")
        if time.monotonic() - began > timeout:
            pytest.fail(f"{url} not 200 within {timeout:g} s:\n{output()}")
        time.sleep(every)
    return time.monotonic() - began


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a server's log file."""
    return log.read_text(errors="replace")[-chars:]


@contextmanager
def started(
    command: Command,
    env: dict[str, str],
    log: Path,
    ready_url: str,
    timeout: float = READY_TIMEOUT_S,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, once `ready_url` answers 200; stopped (its whole group: SIGTERM,
    then SIGKILL) at the end."""

    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            await_ready(ready_url, process.poll, lambda: log_tail(log), timeout)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the group this test started
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)


def answers(url: str) -> bool:
    """`url` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stored_predictions(url: str, request_ids: list[str]) -> list[dict[str, Any]]:
    """The `model_predictions` rows of these requests (a fresh connection each time)."""
    engine = create_engine(url)
    table = ModelPrediction.__table__
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.request_id.in_(request_ids)))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


SERVE_READY_TIMEOUT_S = 180.0


@contextmanager
def serving_process(
    served_models: str, folder: Path, up: str = "/readyz", **settings_env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bentoml serve` as `prepiq serve` starts it, on a free port, on the fixtures'
    stores, with a flush interval and batch so long that only the shutdown writes the
    prediction log (`settings_env` adds or overrides settings). Yields the base URL and
    the process (stopped at the end if alive) once `up` answers 200 (`/livez` for a
    service that is to start not ready); its log is `folder/serve.log`."""

    settings_now = get_settings()
    port = free_port()
    env = {
        **os.environ,
        **service_env(served_models),
        "PREPIQ_HOME": str(settings_now.home),
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "MLFLOW_TRACKING_URI": settings_now.resolved_tracking_uri,
        "PREPIQ_SERVING_LOG_BATCH_SIZE": "1000000",
        "PREPIQ_SERVING_LOG_FLUSH_SECONDS": "3600",
        "PREPIQ_LOG_FORMAT": "json",
        **settings_env,
    }
    command = [
        sys.executable, "-m", "bentoml", "serve", "serving.service:PrepIQService",
        "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PROJECT_ROOT),
    ]  # fmt: skip
    log_file = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await_ready(
            f"{base}{up}", process.poll, lambda: log_tail(folder / "serve.log"),
            SERVE_READY_TIMEOUT_S,
        )  # fmt: skip
        yield base, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the group this fixture started
            process.wait(timeout=30)
        log_file.close()


def progress_day(**changes: Any) -> dict[str, Any]:
    """One valid day of progress-forecast inputs, with `changes`."""
    return {
        "day": "2026-11-20",
        "study_minutes": 30,
        "logins": 1,
        "streak_days": 3,
        "test_score": None,
        "completion_percent": 40,
    } | changes
