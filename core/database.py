"""The database engine every component shares: URL checks, pooling, SQLite pragmas.

Supabase hands out `postgresql://` URLs; they are run with psycopg 3. On Supabase's
transaction-mode pooler (port 6543) prepared statements do not work, so they are off there.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool, QueuePool

from core.config import Settings, get_settings
from core.exceptions import SourceUnavailableError, UnsupportedURLError
from core.metrics import watch_queries
from core.security import redact_url

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")
SUPABASE_TRANSACTION_POOLER_PORT = 6543

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str) -> URL:
    """Parse a database URL, mapping the PostgreSQL spellings onto psycopg 3.

    Raises UnsupportedURLError naming the scheme when it is neither SQLite nor PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedURLError(
            f"not a database URL: {redact_url(url)!r} (expected sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
        ) from exc
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise UnsupportedURLError(
            f"unsupported database URL scheme {parsed.drivername!r} in {redact_url(url)!r}; "
            f"use one of: sqlite, postgresql+psycopg"
        )
    if parsed.drivername.startswith("postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_postgres(engine_or_url: Engine | str) -> bool:
    """Whether an engine or URL talks to PostgreSQL."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else normalise_url(engine_or_url)
    return url.get_backend_name() == "postgresql"


def describe_host(url: URL) -> str:
    """`host:port/db` for messages; the file path for SQLite."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _build_engine(url: URL, settings: Settings, pooled: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        # One file, many short connections: no pool to keep stale handles around (a
        # reseeded file would be read through a handle on the old one). A long-running
        # reader asks for a pool: opening a connection with its pragmas costs about
        # 0.6 ms, more than the indexed query a request makes on it.
        engine = create_engine(
            url,
            poolclass=QueuePool if pooled else NullPool,
            connect_args={"timeout": 60, "check_same_thread": False},
            **({"pool_size": settings.db_pool_size, "max_overflow": -1} if pooled else {}),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine

    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=postgres_connect_args(url, settings),
    )


def postgres_connect_args(url: URL, settings: Settings) -> dict[str, Any]:
    """psycopg connection arguments: a connect timeout, and no prepared statements on
    Supabase's transaction-mode pooler (port 6543), where they break."""
    connect_args: dict[str, Any] = {"connect_timeout": settings.db_connect_timeout_seconds}
    if url.port == SUPABASE_TRANSACTION_POOLER_PORT:
        connect_args["prepare_threshold"] = None
    return connect_args


def get_engine(
    url: str | None = None, settings: Settings | None = None, *, pooled: bool = False
) -> Engine:
    """The shared engine for a URL (default: the configured source), created once.
    PostgreSQL engines always pool; a SQLite engine pools only when `pooled` (a
    long-running process that owns its file, such as the service)."""
    settings = settings or get_settings()
    parsed = normalise_url(url or settings.resolved_source_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    sqlite_pool = pooled and parsed.get_backend_name() == "sqlite"
    key = parsed.render_as_string(hide_password=False) + (" (pooled)" if sqlite_pool else "")
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _build_engine(parsed, settings, sqlite_pool)
            watch_queries(engine, settings.slow_query_seconds)
        return engine


def error_reason(exc: BaseException) -> str:
    """The first line of the driver's own message (what a user can act on)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_connection(engine: Engine) -> None:
    """Open one connection, or raise SourceUnavailableError naming host and error."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise SourceUnavailableError(
            f"cannot reach database at {describe_host(engine.url)}: {error_reason(exc)}"
        ) from exc


def dispose_engine(url: str) -> None:
    """Close one URL's shared engines' pooled connections and forget the engines (a
    database about to be dropped; a test's throwaway one when the test ends, so a long
    test session does not hold a pool per database it made)."""
    key = normalise_url(url).render_as_string(hide_password=False)
    with _lock:
        for name in (key, f"{key} (pooled)"):
            engine = _engines.pop(name, None)
            if engine is not None:
                engine.dispose()


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
