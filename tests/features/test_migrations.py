"""The contract migrations create the schema the models describe, on SQLite and on the
real PostgreSQL, keep `updated_at` current, and downgrade cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from core.database import get_engine
from core.exceptions import ContractError
from features.contract_doc import DOC_PATH, render_contract
from features.migrate import (
    contract_problems,
    current_revision,
    downgrade,
    head_revision,
    require_contract,
    upgrade,
)
from features.schema import CONTRACT_TABLES, Base
from synthetic.generator import seed_source
from tests.conftest import END_DATE


def test_upgrade_creates_the_contract_and_matches_the_models(any_url: str) -> None:
    engine = get_engine(any_url)
    assert upgrade(engine) == head_revision()
    assert set(CONTRACT_TABLES) <= set(inspect(engine).get_table_names())
    require_contract(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diffs == [], f"migration and models disagree: {diffs}"


def test_indexes_for_pipeline_and_serving_queries_exist(any_url: str) -> None:
    engine = get_engine(any_url)
    upgrade(engine)
    inspector = inspect(engine)
    answers = {tuple(ix["column_names"]) for ix in inspector.get_indexes("test_answers")}
    assert ("user_id", "answered_at") in answers
    assert ("updated_at",) in answers
    predictions = {tuple(ix["column_names"]) for ix in inspector.get_indexes("model_predictions")}
    assert ("user_id", "created_at") in predictions
    assert ("created_at",) in predictions


def test_update_moves_updated_at_forward(any_url: str) -> None:
    engine = get_engine(any_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subjects (id, code, name, created_at, updated_at) "
                "VALUES (1, 'MATH', 'Mathematics', '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
            )
        )
    time.sleep(0.01)
    with engine.begin() as conn:
        conn.execute(text("UPDATE subjects SET name = 'Maths' WHERE id = 1"))
        updated = conn.execute(text("SELECT updated_at FROM subjects WHERE id = 1")).scalar_one()
    assert str(updated) > "2025", f"updated_at stayed at {updated}"


def test_downgrade_removes_everything(any_url: str) -> None:
    engine = get_engine(any_url)
    upgrade(engine)
    assert downgrade(engine) is None
    assert current_revision(engine) is None
    left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert left == set()
    assert upgrade(engine) == head_revision()  # and it comes back


def test_contract_check_names_what_a_database_lacks(any_url: str) -> None:
    engine = get_engine(any_url)
    upgrade(engine)
    assert contract_problems(engine) == []
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE question_ratings"))
        conn.execute(text("ALTER TABLE users DROP COLUMN exam_date"))
    problems = contract_problems(engine)
    assert "table question_ratings is missing" in problems
    assert "column users.exam_date is missing" in problems
    with pytest.raises(ContractError, match=r"users\.exam_date"):
        require_contract(engine)


def test_contract_document_is_generated_from_the_schema() -> None:
    assert DOC_PATH.read_text() == render_contract(), "run `python -m features.contract_doc`"
    for table in CONTRACT_TABLES:
        assert f"## `{table}`" in render_contract()


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in CONTRACT_TABLES
        }


def test_untimed_answers_and_paperless_questions_keep_rows_triggers_and_keys(
    any_url: str, tmp_path: Path
) -> None:
    """0003 on a filled database: every row stays, the rebuilt tables (SQLite) keep their
    updated_at triggers and foreign keys, and a downgrade refuses while a value is missing."""
    engine = get_engine(any_url)
    upgrade(engine, "0002")
    seed_source(
        engine, students=12, seed=3, days=60, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    before = _counts(engine)
    assert upgrade(engine) == head_revision()
    assert _counts(engine) == before
    with engine.begin() as conn:
        answer = conn.execute(text("SELECT MIN(id) FROM test_answers")).scalar_one()
        conn.execute(
            text("UPDATE test_answers SET updated_at = '2020-01-01' WHERE id = :a"), {"a": answer}
        )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE test_answers SET time_taken_seconds = NULL WHERE id = :a"), {"a": answer}
        )
        conn.execute(
            text("UPDATE questions SET paper_id = NULL, question_number = NULL WHERE id = 1")
        )
        touched = conn.execute(
            text("SELECT updated_at FROM test_answers WHERE id = :a"), {"a": answer}
        ).scalar_one()
        if engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    assert str(touched) > "2025", "the rebuilt table lost its updated_at trigger"
    with pytest.raises(
        ContractError, match=r"table test_answers: column time_taken_seconds is null in 1 row"
    ):
        downgrade(engine, "0002")
    assert current_revision(engine) == head_revision()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE test_answers SET time_taken_seconds = 30 WHERE id = :a"), {"a": answer}
        )
        conn.execute(text("DELETE FROM question_ratings WHERE question_id = 1"))
        conn.execute(text("DELETE FROM test_answers WHERE question_id = 1"))
        conn.execute(text("DELETE FROM questions WHERE id = 1"))
    assert downgrade(engine, "0002") == "0002"
