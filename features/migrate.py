"""Apply the data-contract migrations to any database URL (`prepiq db upgrade`)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.sql.type_api import TypeEngine

from core.database import check_connection
from core.exceptions import ContractError
from features.schema import CONTRACT_TABLES, Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration in the code."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration a database is at (None when never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> str | None:
    check_connection(engine)
    config = _config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # SQLite changes a column by rebuilding its table, which drops a referenced
            # table for a moment: foreign keys are off during the migration (the pragma
            # only takes effect outside a transaction) and checked once at its end.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        with conn.begin():  # one transaction: a failed migration changes nothing
            if sqlite:
                _begin_sqlite(conn)
            config.attributes["connection"] = conn
            step(config, revision)
            if sqlite:
                _require_keys(conn)
    return current_revision(engine)


def _begin_sqlite(conn: Connection) -> None:
    """Open SQLite's transaction now: the sqlite3 driver opens one only before a DML
    statement, so a migration's first DDL would otherwise commit on its own."""
    raw = conn.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        raw.execute("BEGIN")


def _require_keys(conn: Connection) -> None:
    """Refuse (rolling the migration back) if it left a row whose parent is missing."""
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise ContractError(
            f"migration left {len(broken)} row(s) without their parent row in {tables}"
        )


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate a database up to `revision` and return the revision it is at."""
    return _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> str | None:
    """Migrate a database down to `revision` (default: drop the whole contract)."""
    return _migrate(engine, command.downgrade, revision)


def contract_problems(engine: Engine) -> list[str]:
    """What a database lacks of the contract: missing tables, missing columns, columns of
    another kind of type (text where a number belongs, ...). Empty when it follows it."""
    check_connection(engine)
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    problems = []
    for name in CONTRACT_TABLES:
        if name not in present:
            problems.append(f"table {name} is missing")
            continue
        found = {c["name"]: c["type"] for c in inspector.get_columns(name)}
        for column in Base.metadata.tables[name].columns:
            if column.name not in found:
                problems.append(f"column {name}.{column.name} is missing")
                continue
            expected = column.type.python_type if _has_python_type(column.type) else None
            actual = found[column.name]
            actual_py = actual.python_type if _has_python_type(actual) else None
            if expected and actual_py and not _compatible(expected, actual_py):
                problems.append(
                    f"column {name}.{column.name} is {actual} but the contract needs "
                    f"{column.type.compile(dialect=engine.dialect)}"
                )
    return problems


def _has_python_type(sql_type: TypeEngine[Any]) -> bool:
    try:
        sql_type.python_type  # noqa: B018 - raises for types without one
    except NotImplementedError:
        return False
    return True


def _compatible(expected: type, actual: type) -> bool:
    # SQLite reports uuid columns as text and numbers loosely; compare families only.
    families = ({int, float, Decimal}, {str, UUID}, {dict, list})
    return expected is actual or any(expected in f and actual in f for f in families)


def require_contract(engine: Engine) -> None:
    """Raise ContractError naming every gap when a database does not follow the contract."""
    problems = contract_problems(engine)
    if problems:
        where = engine.url.render_as_string(hide_password=True)
        hint = "; run `prepiq db upgrade`" if any("table" in p for p in problems) else ""
        raise ContractError(
            f"database at {where} does not follow the contract: {'; '.join(problems)}{hint}"
        )
