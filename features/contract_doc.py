"""Render `docs/data-contract.md` from the schema itself, so the document a Supabase
project is checked against never drifts from the code (a test compares them).

Run `python -m features.contract_doc` to rewrite the document."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import CheckConstraint, Column, Index, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql

from features.schema import Base

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "data-contract.md"

INTRO = """# The PrepIQ data contract

What the ML platform reads from (and, for `model_predictions`, writes to) the PrepIQ
Supabase database. The tables, columns, keys and indexes below are created by
`prepiq db upgrade` (Alembic migrations under `features/migrations/`) on PostgreSQL and
SQLite; a Supabase project follows the contract when it has these tables and columns with
these types. Types are PostgreSQL's (SQLite stores the same values in its own types).

Conventions:
- User ids are Supabase Auth ids (`uuid`); every other id is an integer.
- Times are `timestamptz` in UTC. Every table the pipeline reads incrementally has
  `created_at` and `updated_at`, and a trigger sets `updated_at = now()` on every UPDATE,
  so the ingest's watermark (`updated_at > last ingest`) sees every change.
- `topic_performance` holds the app's current running totals, not history: features that
  must be point-in-time correct are built from `test_answers`, never from it.
- This document is generated from `features/schema.py` (`python -m features.contract_doc`).
"""


def _column_type(column: Column[object]) -> str:
    return str(column.type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def _keys(column: Column[object]) -> str:
    marks = []
    if column.primary_key:
        marks.append("PK")
    marks.extend(f"FK → {fk.column.table.name}.{fk.column.name}" for fk in column.foreign_keys)
    return ", ".join(marks)


def _table_section(table: Table) -> list[str]:
    lines = [f"## `{table.name}`", "", table.comment or "", ""]
    lines += ["| column | type | null | keys | meaning |", "| --- | --- | --- | --- | --- |"]
    for column in table.columns:
        lines.append(
            f"| `{column.name}` | {_column_type(column)} | {'yes' if column.nullable else 'no'} "
            f"| {_keys(column)} | {column.comment or ''} |"
        )
    rules = []
    for constraint in sorted(table.constraints, key=lambda c: str(c.name)):
        if isinstance(constraint, UniqueConstraint):
            rules.append(f"- unique ({', '.join(c.name for c in constraint.columns)})")
        elif isinstance(constraint, CheckConstraint):
            rules.append(f"- check: `{constraint.sqltext}`")
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        assert isinstance(index, Index)
        rules.append(f"- index `{index.name}` ({', '.join(c.name for c in index.columns)})")
    if rules:
        lines += ["", *rules]
    return [*lines, ""]


def render_contract() -> str:
    """The whole contract document as Markdown."""
    lines = [INTRO]
    for table in Base.metadata.sorted_tables:
        lines += _table_section(table)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(render_contract())
    print(f"wrote {DOC_PATH}")
