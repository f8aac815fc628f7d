"""Alembic environment: runs the contract migrations on the connection `features.migrate`
hands over (any URL the platform accepts), in one transaction."""

from __future__ import annotations

from alembic import context

from features.schema import Base

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
