"""what real apps leave out: untimed answers, questions not from a past paper

An app that does not time answers has no `test_answers.time_taken_seconds`, and an app
whose questions are written for it has no past paper (nor a number within one) behind
them: the contract no longer makes either invent a value. The checks still hold for
the values given (`time_taken_seconds > 0`; a NULL passes a CHECK).

SQLite rebuilds a table to change a column (alembic's batch mode): the rebuilt tables'
`updated_at` triggers are re-created (`features.migrate` checks the foreign keys once the
rebuild is done).

Downgrading needs the values back: it refuses, naming the column and the rows, while
any are missing, rather than invent them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.exceptions import ContractError
from features.contract_triggers import sqlite_touch_trigger

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, type, comment when nullable, comment when required)
COLUMNS = (
    (
        "questions",
        "paper_id",
        sa.Integer(),
        "Past paper the question appeared in; null for a question not from a paper.",
        "Past paper the question appeared in.",
    ),
    (
        "questions",
        "question_number",
        sa.SmallInteger(),
        "Number of the question within its paper; null without a paper.",
        "Number of the question within its paper.",
    ),
    (
        "test_answers",
        "time_taken_seconds",
        sa.Float(),
        "Seconds spent on the question (> 0); null when the app does not time it.",
        "Seconds spent on the question (> 0).",
    ),
)
QUESTIONS_COMMENT = (
    "A question, tagged with its topic, from a past paper or (paper null) written for the\n"
    "app; `difficulty` is the app's 1-5.",
    "A question of a past paper, tagged with its topic; `difficulty` is the app's 1-5.",
)


def _set_nullable(nullable: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:  # SQLite keeps no comments
        new, old = QUESTIONS_COMMENT if nullable else QUESTIONS_COMMENT[::-1]
        op.create_table_comment("questions", new, existing_comment=old)
    for table in dict.fromkeys(t for t, *_ in COLUMNS):
        with op.batch_alter_table(table) as batch:
            for _, column, kind, optional, required in (c for c in COLUMNS if c[0] == table):
                batch.alter_column(
                    column,
                    existing_type=kind,
                    nullable=nullable,
                    comment=optional if nullable else required,
                    existing_comment=required if nullable else optional,
                )
        if sqlite:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_touch_updated_at")
            op.execute(sqlite_touch_trigger(table))


def upgrade() -> None:
    _set_nullable(True)


def downgrade() -> None:
    bind = op.get_bind()
    missing = []
    for table, column, *_ in COLUMNS:
        rows = bind.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE {column} IS NULL")
        ).scalar_one()
        if rows:
            missing.append(f"table {table}: column {column} is null in {rows} row(s)")
    if missing:
        raise ContractError(
            f"cannot downgrade below 0003, revision 0002 requires a value: {'; '.join(missing)}"
        )
    _set_nullable(False)
