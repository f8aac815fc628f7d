"""What the serving tests share (tests/test_serving.py in-process, tests/test_serving_process.py
against a real `bentoml serve`): the settings they serve with, credentials, the error-shape
assertion, and the small real training run whose models they serve (its session fixtures
are in tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from core.config import get_settings
from synthetic.small_source import write_small_source_params
from tests.conftest import END_DATE

SECRET = "test-secret-" + "x" * 32
SERVICE_KEY = "service-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
SCHEMA_TEST_KEY = "schema-test-key"  # a caller of its own, so its rate window is its own
RATE_LIMIT = 60  # per minute and caller
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
        "PREPIQ_SERVING_API_KEYS": f"{SERVICE_KEY},{SCHEMA_TEST_KEY}",
        "PREPIQ_SERVING_ADMIN_API_KEYS": ADMIN_KEY,
        "PREPIQ_SERVING_RATE_LIMIT": f"{RATE_LIMIT}/minute",
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


def import_to_store(key: str, version: str) -> str:
    """Import a registered version into the BentoML store with promotion's own code;
    returns the tag."""
    from mlflow import MlflowClient

    from registry.promotion import import_to_serving
    from training.models import MODELS

    return import_to_serving(MODELS[key], MlflowClient(), version)


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


def as_service() -> dict[str, str]:
    return {"X-API-Key": SERVICE_KEY}


def as_admin() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


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
