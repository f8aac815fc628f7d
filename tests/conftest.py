"""Shared fixtures: an isolated PREPIQ_HOME per test session, throwaway PostgreSQL
databases on the real server at 127.0.0.1:5432, and small seeded sources."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import Engine

from core.database import dispose_engine
from synthetic.small_source import SMALL_SOURCE_PARAMS, write_small_source_params

if TYPE_CHECKING:
    from tests.alert_inbox import Inbox
    from tests.serving_support import ServingRun

POSTGRES_SERVER = os.environ.get("PREPIQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
END_DATE = date(2026, 11, 20)  # fixed so seeded rows are comparable across runs


@pytest.fixture(scope="session", autouse=True)
def prepiq_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session gets its own PREPIQ_HOME: nothing touches the developer's."""
    from core.config import get_settings

    home = tmp_path_factory.mktemp("prepiq_home")
    with pytest.MonkeyPatch.context() as patch:  # session-wide; undone at the end
        patch.setenv("PREPIQ_HOME", str(home))
        patch.delenv("PREPIQ_SOURCE_URL", raising=False)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        # Training runs push their snapshot: to the session's folder, not the repository's.
        patch.setenv("PREPIQ_DVC_REMOTE_URL", str(home / "dvc-remote"))
        get_settings.cache_clear()
        get_settings().apply_environment()
        yield home
    get_settings.cache_clear()


@pytest.fixture
def private_tracking_store(tmp_path: Path) -> Iterator[str]:
    """A tracking store and registry of the test's own, so a model it trains does not
    become a new version in the session's store (whose first versions the serving tests
    serve). MLflow points back at the session's store afterwards. Yields the URI."""
    from core.config import get_settings
    from training import tracking

    uri = f"sqlite:///{tmp_path / 'private-mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        get_settings.cache_clear()
        tracking.configure()
        yield uri
    get_settings.cache_clear()
    tracking.configure()


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # the suite needs the real server: fail loudly
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}")


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator[Callable[[], str]]:
    """Factory of throwaway PostgreSQL databases, all dropped when the session ends."""
    created: list[str] = []

    def make() -> str:
        name = f"prepiq_test_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://{POSTGRES_SERVER.split('://', 1)[1]}/{name}"

    yield make
    from core.database import dispose_engines

    dispose_engines()
    with _admin() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(make_pg_database: Callable[[], str]) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (its pooled connections closed
    when the test ends: the server allows 100 clients, and the suite makes hundreds of
    databases)."""
    url = make_pg_database()
    yield url
    dispose_engine(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, empty SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'source.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(
    request: pytest.FixtureRequest, tmp_path: Path, make_pg_database: Callable[[], str]
) -> Iterator[str]:
    """The same test on SQLite and on the real PostgreSQL (its engine's connections
    closed when the test ends, as `pg_url`'s)."""
    url = f"sqlite:///{tmp_path / 'source.db'}" if request.param == "sqlite" else make_pg_database()
    yield url
    dispose_engine(url)


def migrated_engine(url: str) -> Engine:
    """The shared engine for `url`, with the contract applied."""
    from core.database import get_engine
    from features.migrate import upgrade

    engine = get_engine(url)
    upgrade(engine)
    return engine


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's engine against a temporary local API for the whole session (real flows,
    real task runs, real retries)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def alert_inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A local HTTP endpoint set as PREPIQ_ALERT_WEBHOOK_URL: it keeps every alert sent."""
    from core.config import get_settings
    from tests.alert_inbox import Inbox

    endpoint = Inbox()
    monkeypatch.setenv("PREPIQ_ALERT_WEBHOOK_URL", endpoint.url)
    get_settings.cache_clear()
    yield endpoint
    endpoint.close()
    get_settings.cache_clear()


@pytest.fixture
def fast_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """params.yaml with short retry delays, so retry tests take a second, not a minute."""
    import yaml

    from core.config import PROJECT_ROOT, get_settings

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["ingest"].update(retries=2, retry_delay_seconds=0.05)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PREPIQ_PARAMS_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


SMALL_DATA_PARAMS = SMALL_SOURCE_PARAMS  # the knobs a small seeded source can fill


@pytest.fixture
def small_data_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """params.yaml with SMALL_DATA_PARAMS applied, for end-to-end runs on small sources."""
    from core.config import get_settings

    path = write_small_source_params(tmp_path)
    monkeypatch.setenv("PREPIQ_PARAMS_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, Path]:
    """A small seeded SQLite source (300 students, 120 days) and its ground-truth folder."""
    from synthetic.generator import seed_source

    folder = tmp_path_factory.mktemp("seeded")
    engine = migrated_engine(f"sqlite:///{folder / 'source.db'}")
    seed_source(
        engine, students=300, seed=7, days=120, end_date=END_DATE, truth_dir=folder / "truth"
    )
    return engine, folder / "truth"


@pytest.fixture(scope="session")
def clean_snapshot(
    seeded_sqlite: tuple[Engine, Path],
    prefect_harness: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A snapshot of the small seeded source, through the real ingest flow (it passed the gate)."""
    from datetime import UTC, datetime

    from features.snapshot import RAW_DIR
    from pipelines.ingest import ingest_flow

    engine, _ = seeded_sqlite
    data = tmp_path_factory.mktemp("data")
    as_of = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
    ingest_flow(
        source_url=engine.url.render_as_string(hide_password=False), data_dir=data, as_of=as_of
    )
    return data / RAW_DIR


# -- serving (tests/serving/test_service.py, tests/serving/test_service_process.py; helpers in
# tests/serving_support.py) ------------------------------------------------------------


@pytest.fixture(scope="session")
def serving_run(
    seeded_sqlite: tuple[Engine, Path],
    prefect_harness: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServingRun:
    """Train all four models once (one trial each) on the small seeded source and make
    each new version `champion` (as a promotion would, without the gate). The BentoML
    store stays empty: the service fetches the champions from the registry at start.
    Returns a `ServingRun`."""
    from mlflow import MlflowClient

    from tests.serving_support import ServingRun, make_champion, train, write_small_params
    from training.models import MODELS

    engine, _ = seeded_sqlite
    folder = tmp_path_factory.mktemp("serving")
    write_small_params(folder)
    # Serving writes model_predictions into its source: it gets a copy (by SQLite's backup
    # API, which sees the WAL), so the seeded source stays as seeded for the tests of it.
    served = folder / "source.db"
    with (
        closing(sqlite3.connect(str(engine.url.database))) as original,
        closing(sqlite3.connect(served)) as copy,
    ):
        original.backup(copy)
    run = ServingRun(url=f"sqlite:///{served}", folder=folder)
    train(run)
    client = MlflowClient()
    for spec in MODELS.values():
        version = client.get_model_version_by_alias(spec.name, "challenger")
        make_champion(spec.key, str(version.version))
    return run


@pytest.fixture(scope="session")
def served_models(serving_run: ServingRun) -> str:
    """The source URL of the served training run."""
    return serving_run.url


@pytest.fixture(scope="session")
def service(served_models: str) -> Iterator[Any]:
    """The service class, configured for the tests (settings are read at import)."""
    from core.config import get_settings
    from tests.serving_support import service_env

    with pytest.MonkeyPatch.context() as patch:
        for key, value in service_env(served_models).items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        from serving.service import PrepIQService

        yield PrepIQService
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def serving_app(service: Any) -> Any:
    """The service's one in-process ASGI app. One per session: BentoML registers its
    Prometheus metrics when an app first starts and never unregisters them, so a second
    app in the same process fails to start. Each user runs its own lifespan on it (a
    fresh service instance); they must not overlap."""
    return service.to_asgi()


@pytest.fixture(scope="session")
def student(served_models: str) -> str:
    """A student of the served source."""
    import pandas as pd

    from core.database import get_engine

    users = pd.read_sql("SELECT id FROM users ORDER BY id", get_engine(served_models))
    return str(users["id"].iloc[0])
