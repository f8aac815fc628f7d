"""Settings: defaults that run with nothing set, environment overrides, offline switches,
and the PostgreSQL pool every component shares."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import NullPool, QueuePool

from core.config import OFFLINE_ENV, Settings, load_params
from core.database import get_engine, normalise_url, postgres_connect_args
from core.exceptions import ConfigError, UnsupportedURLError
from core.security import redact_url


def test_defaults_put_everything_under_prepiq_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREPIQ_HOME", str(tmp_path))
    monkeypatch.delenv("PREPIQ_SOURCE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings()
    assert settings.resolved_source_url == f"sqlite:///{tmp_path / 'source.db'}"
    assert settings.resolved_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.ground_truth_dir == tmp_path / "ground_truth"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPIQ_SOURCE_URL", "postgresql://u:p@db.example.supabase.co:5432/postgres")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("PREPIQ_DB_POOL_SIZE", "12")
    settings = Settings()
    assert settings.resolved_source_url.startswith("postgresql://")
    assert settings.resolved_tracking_uri == "http://mlflow.internal:5000"
    assert settings.db_pool_size == 12


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPIQ_DB_POOL_SIZE", "0")
    with pytest.raises(ValueError, match="db_pool_size"):
        Settings()


def test_apply_environment_sets_offline_switches_without_overriding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    Settings(home=tmp_path).apply_environment()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["BENTOML_DO_NOT_TRACK"] == "true"
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "prefect")


def test_postgres_engine_uses_the_pool_settings() -> None:
    settings = Settings(db_pool_size=3, db_max_overflow=4, db_pool_recycle_seconds=60)
    engine = get_engine("postgresql://postgres@127.0.0.1:5432/postgres", settings)
    assert engine.url.drivername == "postgresql+psycopg"
    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.size() == 3
    assert engine.pool._max_overflow == 4
    assert engine.pool._pre_ping is True
    assert engine.pool._recycle == 60
    assert get_engine("postgresql://postgres@127.0.0.1:5432/postgres", settings) is engine


def test_sqlite_engine_has_no_pool(tmp_path: Path) -> None:
    assert isinstance(get_engine(f"sqlite:///{tmp_path / 'x.db'}").pool, NullPool)


def test_a_pooled_sqlite_engine_keeps_its_connections_across_threads(tmp_path: Path) -> None:
    """The service's engine: one pool, its connections reused (one open per connection,
    not per query) and usable from the inference threads that did not open them."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    pooled = get_engine(url, pooled=True)
    assert isinstance(pooled.pool, QueuePool)
    assert get_engine(url, pooled=True) is pooled
    assert get_engine(url) is not pooled and isinstance(get_engine(url).pool, NullPool)
    opened: list[object] = []
    event.listen(pooled, "connect", lambda conn, _record: opened.append(conn))

    def query() -> int:
        with pooled.connect() as conn:
            return int(conn.execute(text("SELECT 1")).scalar_one())

    assert query() == 1
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(query).result() == 1  # the same connection, another thread
    assert len(opened) == 1


def test_supabase_transaction_pooler_disables_prepared_statements() -> None:
    settings = Settings(db_connect_timeout_seconds=7)
    pooler = postgres_connect_args(
        normalise_url("postgresql://u:p@pooler.example:6543/postgres"), settings
    )
    direct = postgres_connect_args(
        normalise_url("postgresql://u:p@db.example:5432/postgres"), settings
    )
    assert pooler == {"connect_timeout": 7, "prepare_threshold": None}
    assert direct == {"connect_timeout": 7}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_url_spellings(url: str, expected: str) -> None:
    assert normalise_url(url).drivername == expected


def test_unsupported_scheme_is_named() -> None:
    with pytest.raises(UnsupportedURLError, match="'mysql'"):
        normalise_url("mysql://u@h/db")


def test_passwords_are_redacted() -> None:
    assert "secret" not in redact_url("postgresql://user:secret@host:5432/db")
    assert "secret" not in redact_url("weird://user:secret@host")


def test_params_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)
    assert load_params()["seed"] == 42


def test_a_params_section_refuses_unknown_keys_and_hyperparameters() -> None:
    from core.config import params_section
    from core.exceptions import ConfigError

    fields = ("trials", "candidates", "search_space")
    ok = params_section(
        {"m": {"trials": 3, "candidates": ["a"], "search_space": {"x": [1, 2]}}}, "m", fields, ["x"]
    )
    assert ok == {"trials": 3, "candidates": ("a",), "search_space": {"x": [1, 2]}}
    with pytest.raises(ConfigError, match=r"params.yaml m: unknown keys \['trails'\]"):
        params_section({"m": {"trails": 3}}, "m", fields)
    with pytest.raises(ConfigError, match=r"m.search_space: unknown hyperparameters \['y'\]"):
        params_section({"m": {"search_space": {"y": [1, 2]}}}, "m", fields, ["x"])
