"""Apply the data-contract migrations to any database URL (`prepiq db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from core.database import check_connection
from core.exceptions import ContractError
from features.schema import CONTRACT_TABLES

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


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate a database up to `revision` and return the revision it is at."""
    check_connection(engine)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return current_revision(engine)


def downgrade(engine: Engine, revision: str = "base") -> str | None:
    """Migrate a database down to `revision` (default: drop the whole contract)."""
    check_connection(engine)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    return current_revision(engine)


def require_contract(engine: Engine) -> None:
    """Raise ContractError naming the missing tables when a database lacks the contract."""
    check_connection(engine)
    present = set(inspect(engine).get_table_names())
    missing = [name for name in CONTRACT_TABLES if name not in present]
    if missing:
        raise ContractError(
            f"database at {engine.url.render_as_string(hide_password=True)} lacks contract "
            f"tables {', '.join(missing)}; run `prepiq db upgrade` first"
        )
