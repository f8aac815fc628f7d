"""the PrepIQ data contract

Creates every table of `docs/data-contract.md` with its keys, checks and indexes, and the
triggers that keep `updated_at` current on UPDATE (the ingest watermark relies on them).

Indexes and the queries they serve:
- `ix_<table>_updated_at` on every table read incrementally: the ingest's
  `WHERE updated_at > :watermark` (pipelines/ingest).
- `ix_test_answers_user_id_answered_at`, `ix_tests_user_id_started_at`,
  `uq_study_activity_user_id_activity_date`, `uq_user_progress_user_id_recorded_on`,
  `uq_topic_performance_user_id_topic_id`: the serving layer's "rows of one user up to
  time t" when it builds features for a `user_id`.
- `ix_test_answers_question_id`, `ix_questions_topic_id`, `ix_question_ratings_question_id`:
  per-question history for the question ranker and the referential checks of the gate.
- `ix_test_answers_test_id`: answers of a test (score recomputation, integrity checks).
- `ix_model_predictions_user_id_created_at`: `GET /api/v1/users/{id}/predictions`;
  `ix_model_predictions_model_name_created_at`: monitoring of one model's recent inputs;
  `ix_model_predictions_created_at`: archiving rows older than the retention period.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 21:02:52.165466
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Tables whose `updated_at` the database itself keeps current, so that rows the app
# updates without touching the column still pass the ingest watermark.
TRACKED_TABLES = (
    "users",
    "subjects",
    "topics",
    "user_subjects",
    "past_papers",
    "questions",
    "tests",
    "test_answers",
    "study_activity",
    "user_progress",
    "topic_performance",
    "user_preferences",
    "question_ratings",
)
PRIMARY_KEYS = {"user_subjects": ("user_id", "subject_id"), "user_preferences": ("user_id",)}


def _create_updated_at_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION prepiq_touch_updated_at() RETURNS trigger AS $$
            BEGIN
                NEW.updated_at = now();
                RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        for table in TRACKED_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_touch_updated_at BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION prepiq_touch_updated_at()"
            )
        return
    for table in TRACKED_TABLES:
        keys = PRIMARY_KEYS.get(table, ("id",))
        match = " AND ".join(f"{k} = NEW.{k}" for k in keys)
        # Only when the statement left updated_at alone, so explicit values stand and the
        # trigger's own UPDATE does not fire it again.
        op.execute(
            f"CREATE TRIGGER {table}_touch_updated_at AFTER UPDATE ON {table} "
            f"FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at BEGIN "
            f"UPDATE {table} SET updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now') "
            f"WHERE {match}; END"
        )


def _drop_updated_at_triggers() -> None:
    for table in TRACKED_TABLES:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_touch_updated_at ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_touch_updated_at")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS prepiq_touch_updated_at()")


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
        sa.UniqueConstraint("code", name=op.f("uq_subjects_code")),
    )
    op.create_table(
        "users",
        sa.Column(
            "id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index(op.f("ix_users_updated_at"), "users", ["updated_at"], unique=False)
    op.create_table(
        "model_predictions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model_name", sa.String(length=80), nullable=False),
        sa.Column("model_version", sa.String(length=40), nullable=False),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=True,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("inputs_digest", sa.String(length=64), nullable=False),
        sa.Column(
            "request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_model_predictions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_predictions")),
    )
    op.create_index(
        op.f("ix_model_predictions_created_at"), "model_predictions", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_model_predictions_model_name_created_at"),
        "model_predictions",
        ["model_name", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_model_predictions_user_id_created_at"),
        "model_predictions",
        ["user_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "past_papers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("exam_year", sa.SmallInteger(), nullable=False),
        sa.Column("paper_number", sa.SmallInteger(), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_past_papers_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_past_papers")),
        sa.UniqueConstraint(
            "subject_id",
            "exam_year",
            "paper_number",
            name=op.f("uq_past_papers_subject_id_exam_year_paper_number"),
        ),
    )
    op.create_table(
        "study_activity",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("activity_date", sa.Date(), nullable=False),
        sa.Column("study_minutes", sa.Integer(), nullable=False),
        sa.Column("logins", sa.SmallInteger(), nullable=False),
        sa.Column("streak_days", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("logins >= 0", name=op.f("ck_study_activity_logins_nonnegative")),
        sa.CheckConstraint("streak_days >= 0", name=op.f("ck_study_activity_streak_nonnegative")),
        sa.CheckConstraint(
            "study_minutes >= 0 AND study_minutes <= 1440",
            name=op.f("ck_study_activity_minutes_range"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_study_activity_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_activity")),
        sa.UniqueConstraint(
            "user_id", "activity_date", name=op.f("uq_study_activity_user_id_activity_date")
        ),
    )
    op.create_index(
        op.f("ix_study_activity_updated_at"), "study_activity", ["updated_at"], unique=False
    )
    op.create_table(
        "topics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("syllabus_weight", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "syllabus_weight >= 0 AND syllabus_weight <= 1", name=op.f("ck_topics_weight_range")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_topics_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topics")),
        sa.UniqueConstraint("subject_id", "name", name=op.f("uq_topics_subject_id_name")),
    )
    op.create_table(
        "user_preferences",
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("daily_goal_minutes", sa.SmallInteger(), nullable=False),
        sa.Column("preferred_difficulty", sa.String(length=8), nullable=False),
        sa.Column(
            "interested_topic_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("reminders_enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "preferred_difficulty IN ('easy','medium','hard')",
            name=op.f("ck_user_preferences_difficulty_set"),
        ),
        sa.CheckConstraint(
            "daily_goal_minutes > 0", name=op.f("ck_user_preferences_goal_positive")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_preferences_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_preferences")),
    )
    op.create_index(
        op.f("ix_user_preferences_updated_at"), "user_preferences", ["updated_at"], unique=False
    )
    op.create_table(
        "user_progress",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("recorded_on", sa.Date(), nullable=False),
        sa.Column("completion_percent", sa.Float(), nullable=False),
        sa.Column("topics_completed", sa.SmallInteger(), nullable=False),
        sa.Column("topics_total", sa.SmallInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "completion_percent >= 0 AND completion_percent <= 100",
            name=op.f("ck_user_progress_completion_range"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_progress_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_progress")),
        sa.UniqueConstraint(
            "user_id", "recorded_on", name=op.f("uq_user_progress_user_id_recorded_on")
        ),
    )
    op.create_index(
        op.f("ix_user_progress_updated_at"), "user_progress", ["updated_at"], unique=False
    )
    op.create_table(
        "user_subjects",
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_user_subjects_subject_id_subjects")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_subjects_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "subject_id", name=op.f("pk_user_subjects")),
    )
    op.create_index(
        op.f("ix_user_subjects_updated_at"), "user_subjects", ["updated_at"], unique=False
    )
    op.create_table(
        "questions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paper_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("question_number", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("marks", sa.SmallInteger(), nullable=False),
        sa.Column("difficulty", sa.SmallInteger(), nullable=False),
        sa.Column("correct_option", sa.String(length=1), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "correct_option IN ('A','B','C','D')", name=op.f("ck_questions_option_set")
        ),
        sa.CheckConstraint(
            "difficulty BETWEEN 1 AND 5", name=op.f("ck_questions_difficulty_range")
        ),
        sa.CheckConstraint("marks > 0", name=op.f("ck_questions_marks_positive")),
        sa.ForeignKeyConstraint(
            ["paper_id"], ["past_papers.id"], name=op.f("fk_questions_paper_id_past_papers")
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_questions_topic_id_topics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questions")),
        sa.UniqueConstraint(
            "paper_id", "question_number", name=op.f("uq_questions_paper_id_question_number")
        ),
    )
    op.create_index(op.f("ix_questions_topic_id"), "questions", ["topic_id"], unique=False)
    op.create_index(op.f("ix_questions_updated_at"), "questions", ["updated_at"], unique=False)
    op.create_table(
        "tests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=True),
        sa.Column("paper_id", sa.Integer(), nullable=True),
        sa.Column("question_count", sa.SmallInteger(), nullable=False),
        sa.Column("score_percent", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('topic_quiz','mock_paper')", name=op.f("ck_tests_kind_set")),
        sa.CheckConstraint(
            "score_percent >= 0 AND score_percent <= 100", name=op.f("ck_tests_score_range")
        ),
        sa.ForeignKeyConstraint(
            ["paper_id"], ["past_papers.id"], name=op.f("fk_tests_paper_id_past_papers")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_tests_subject_id_subjects")
        ),
        sa.ForeignKeyConstraint(["topic_id"], ["topics.id"], name=op.f("fk_tests_topic_id_topics")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_tests_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tests")),
    )
    op.create_index(op.f("ix_tests_updated_at"), "tests", ["updated_at"], unique=False)
    op.create_index(
        op.f("ix_tests_user_id_started_at"), "tests", ["user_id", "started_at"], unique=False
    )
    op.create_table(
        "topic_performance",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("avg_time_seconds", sa.Float(), nullable=False),
        sa.Column("last_attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "accuracy >= 0 AND accuracy <= 1", name=op.f("ck_topic_performance_accuracy_range")
        ),
        sa.CheckConstraint(
            "correct >= 0 AND correct <= attempts",
            name=op.f("ck_topic_performance_correct_le_attempts"),
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_topic_performance_topic_id_topics")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_topic_performance_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topic_performance")),
        sa.UniqueConstraint(
            "user_id", "topic_id", name=op.f("uq_topic_performance_user_id_topic_id")
        ),
    )
    op.create_index(
        op.f("ix_topic_performance_updated_at"), "topic_performance", ["updated_at"], unique=False
    )
    op.create_table(
        "question_ratings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("difficulty_rating", sa.SmallInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "difficulty_rating BETWEEN 1 AND 5", name=op.f("ck_question_ratings_rating_range")
        ),
        sa.ForeignKeyConstraint(
            ["question_id"],
            ["questions.id"],
            name=op.f("fk_question_ratings_question_id_questions"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_question_ratings_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_question_ratings")),
        sa.UniqueConstraint(
            "user_id", "question_id", name=op.f("uq_question_ratings_user_id_question_id")
        ),
    )
    op.create_index(
        op.f("ix_question_ratings_question_id"), "question_ratings", ["question_id"], unique=False
    )
    op.create_index(
        op.f("ix_question_ratings_updated_at"), "question_ratings", ["updated_at"], unique=False
    )
    op.create_table(
        "test_answers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("test_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
        ),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("selected_option", sa.String(length=1), nullable=True),
        sa.Column("is_correct", sa.Boolean(), nullable=False),
        sa.Column("time_taken_seconds", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "selected_option IS NULL OR selected_option IN ('A','B','C','D')",
            name=op.f("ck_test_answers_option_set"),
        ),
        sa.CheckConstraint("time_taken_seconds > 0", name=op.f("ck_test_answers_time_positive")),
        sa.ForeignKeyConstraint(
            ["question_id"], ["questions.id"], name=op.f("fk_test_answers_question_id_questions")
        ),
        sa.ForeignKeyConstraint(
            ["test_id"], ["tests.id"], name=op.f("fk_test_answers_test_id_tests")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_test_answers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_answers")),
    )
    op.create_index(
        op.f("ix_test_answers_question_id"), "test_answers", ["question_id"], unique=False
    )
    op.create_index(op.f("ix_test_answers_test_id"), "test_answers", ["test_id"], unique=False)
    op.create_index(
        op.f("ix_test_answers_updated_at"), "test_answers", ["updated_at"], unique=False
    )
    op.create_index(
        op.f("ix_test_answers_user_id_answered_at"),
        "test_answers",
        ["user_id", "answered_at"],
        unique=False,
    )

    _create_updated_at_triggers()


def downgrade() -> None:
    _drop_updated_at_triggers()
    op.drop_index(op.f("ix_test_answers_user_id_answered_at"), table_name="test_answers")
    op.drop_index(op.f("ix_test_answers_updated_at"), table_name="test_answers")
    op.drop_index(op.f("ix_test_answers_test_id"), table_name="test_answers")
    op.drop_index(op.f("ix_test_answers_question_id"), table_name="test_answers")
    op.drop_table("test_answers")
    op.drop_index(op.f("ix_question_ratings_updated_at"), table_name="question_ratings")
    op.drop_index(op.f("ix_question_ratings_question_id"), table_name="question_ratings")
    op.drop_table("question_ratings")
    op.drop_index(op.f("ix_topic_performance_updated_at"), table_name="topic_performance")
    op.drop_table("topic_performance")
    op.drop_index(op.f("ix_tests_user_id_started_at"), table_name="tests")
    op.drop_index(op.f("ix_tests_updated_at"), table_name="tests")
    op.drop_table("tests")
    op.drop_index(op.f("ix_questions_updated_at"), table_name="questions")
    op.drop_index(op.f("ix_questions_topic_id"), table_name="questions")
    op.drop_table("questions")
    op.drop_index(op.f("ix_user_subjects_updated_at"), table_name="user_subjects")
    op.drop_table("user_subjects")
    op.drop_index(op.f("ix_user_progress_updated_at"), table_name="user_progress")
    op.drop_table("user_progress")
    op.drop_index(op.f("ix_user_preferences_updated_at"), table_name="user_preferences")
    op.drop_table("user_preferences")
    op.drop_table("topics")
    op.drop_index(op.f("ix_study_activity_updated_at"), table_name="study_activity")
    op.drop_table("study_activity")
    op.drop_table("past_papers")
    op.drop_index(op.f("ix_model_predictions_user_id_created_at"), table_name="model_predictions")
    op.drop_index(
        op.f("ix_model_predictions_model_name_created_at"), table_name="model_predictions"
    )
    op.drop_index(op.f("ix_model_predictions_created_at"), table_name="model_predictions")
    op.drop_table("model_predictions")
    op.drop_index(op.f("ix_users_updated_at"), table_name="users")
    op.drop_table("users")
    op.drop_table("subjects")
