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

from features.contract_triggers import sqlite_touch_trigger

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
        op.execute(sqlite_touch_trigger(table))


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
        sa.Column("id", sa.Integer(), nullable=False, comment="Subject id."),
        sa.Column(
            "code",
            sa.String(length=32),
            nullable=False,
            comment="Short unique code (MATH, PHYS, ...).",
        ),
        sa.Column(
            "name", sa.String(length=120), nullable=False, comment="Subject name shown in the app."
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
        sa.UniqueConstraint("code", name=op.f("uq_subjects_code")),
        comment="An exam subject (Mathematics, Physics, ...).",
    )
    op.create_table(
        "users",
        sa.Column(
            "id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Supabase Auth user id (auth.users.id).",
        ),
        sa.Column("email", sa.String(length=320), nullable=False, comment="Login e-mail, unique."),
        sa.Column(
            "display_name", sa.String(length=120), nullable=False, comment="Name shown in the app."
        ),
        sa.Column(
            "exam_date",
            sa.Date(),
            nullable=True,
            comment="Date of the student's target exam; null when not set.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        comment="A student of the app (one row per Supabase Auth user).",
    )
    op.create_index(op.f("ix_users_updated_at"), "users", ["updated_at"], unique=False)
    op.create_table(
        "model_predictions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="Row id.",
        ),
        sa.Column(
            "model_name",
            sa.String(length=80),
            nullable=False,
            comment="Registered model name (prepiq-focus-area, ...).",
        ),
        sa.Column(
            "model_version",
            sa.String(length=40),
            nullable=False,
            comment="Registered model version that answered.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=True,
            comment="Student the prediction is about; null when the inputs came in the request.",
        ),
        sa.Column(
            "request_id",
            sa.String(length=64),
            nullable=False,
            comment="Request id returned to the caller in a header.",
        ),
        sa.Column(
            "inputs_digest",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the canonical model inputs (for deduplication and drift checks).",
        ),
        sa.Column(
            "request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The request body as received.",
        ),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The response body as sent.",
        ),
        sa.Column(
            "latency_ms",
            sa.Float(),
            nullable=False,
            comment="Time the service took to answer, in milliseconds.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_model_predictions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_predictions")),
        comment="Every prediction the serving layer made, for audit, monitoring and archiving.",
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
        sa.Column("id", sa.Integer(), nullable=False, comment="Paper id."),
        sa.Column("subject_id", sa.Integer(), nullable=False, comment="Subject of the paper."),
        sa.Column("exam_year", sa.SmallInteger(), nullable=False, comment="Year the exam was sat."),
        sa.Column(
            "paper_number",
            sa.SmallInteger(),
            nullable=False,
            comment="Paper number within the year's exam (1, 2, ...).",
        ),
        sa.Column("exam_date", sa.Date(), nullable=False, comment="Date the exam was sat."),
        sa.Column(
            "title", sa.String(length=200), nullable=False, comment="Title shown in the app."
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A past exam paper of a subject, sat on `exam_date` in `exam_year`.",
    )
    op.create_table(
        "study_activity",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="Row id.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student.",
        ),
        sa.Column("activity_date", sa.Date(), nullable=False, comment="Day of the activity (UTC)."),
        sa.Column(
            "study_minutes",
            sa.Integer(),
            nullable=False,
            comment="Minutes studied that day (0-1440).",
        ),
        sa.Column(
            "logins",
            sa.SmallInteger(),
            nullable=False,
            comment="Times the student opened the app that day.",
        ),
        sa.Column(
            "streak_days",
            sa.Integer(),
            nullable=False,
            comment="Consecutive days of study up to and including this one.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A student's study on one day: minutes, logins and the streak it extends.",
    )
    op.create_index(
        op.f("ix_study_activity_updated_at"), "study_activity", ["updated_at"], unique=False
    )
    op.create_table(
        "topics",
        sa.Column("id", sa.Integer(), nullable=False, comment="Topic id."),
        sa.Column(
            "subject_id", sa.Integer(), nullable=False, comment="Subject the topic belongs to."
        ),
        sa.Column(
            "name",
            sa.String(length=160),
            nullable=False,
            comment="Topic name, unique within its subject.",
        ),
        sa.Column(
            "position",
            sa.SmallInteger(),
            nullable=False,
            comment="Order of the topic in the subject's syllabus (1 = first).",
        ),
        sa.Column(
            "syllabus_weight",
            sa.Float(),
            nullable=False,
            comment="Share of the subject's exam marks the syllabus gives the topic (0-1; a subject's weights sum to 1).",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
        ),
        sa.CheckConstraint(
            "syllabus_weight >= 0 AND syllabus_weight <= 1", name=op.f("ck_topics_weight_range")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_topics_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topics")),
        sa.UniqueConstraint("subject_id", "name", name=op.f("uq_topics_subject_id_name")),
        comment="A syllabus topic of a subject; `syllabus_weight` is its share of the exam's marks.",
    )
    op.create_table(
        "user_preferences",
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student.",
        ),
        sa.Column(
            "daily_goal_minutes",
            sa.SmallInteger(),
            nullable=False,
            comment="Minutes a day the student aims to study.",
        ),
        sa.Column(
            "preferred_difficulty",
            sa.String(length=8),
            nullable=False,
            comment="easy, medium or hard.",
        ),
        sa.Column(
            "interested_topic_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="Topic ids the student marked as interesting (JSON array).",
        ),
        sa.Column(
            "reminders_enabled",
            sa.Boolean(),
            nullable=False,
            comment="Whether the student wants study reminders.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A student's stated learning preferences.",
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
            comment="Row id.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student.",
        ),
        sa.Column(
            "recorded_on",
            sa.Date(),
            nullable=False,
            comment="Day the app recorded the progress (UTC).",
        ),
        sa.Column(
            "completion_percent",
            sa.Float(),
            nullable=False,
            comment="Syllabus completion over the student's enrolled subjects, weighted by syllabus weight, 0-100.",
        ),
        sa.Column(
            "topics_completed",
            sa.SmallInteger(),
            nullable=False,
            comment="Topics of the enrolled syllabi the student has completed.",
        ),
        sa.Column(
            "topics_total",
            sa.SmallInteger(),
            nullable=False,
            comment="Topics of the enrolled syllabi.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="Syllabus completion of a student as recorded by the app on a day.",
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
            comment="Student.",
        ),
        sa.Column(
            "subject_id",
            sa.Integer(),
            nullable=False,
            comment="Subject the student is enrolled in.",
        ),
        sa.Column(
            "enrolled_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the student enrolled.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_user_subjects_subject_id_subjects")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_subjects_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "subject_id", name=op.f("pk_user_subjects")),
        comment="Which subjects a student is enrolled in (completion counts these syllabi).",
    )
    op.create_index(
        op.f("ix_user_subjects_updated_at"), "user_subjects", ["updated_at"], unique=False
    )
    op.create_table(
        "questions",
        sa.Column("id", sa.Integer(), nullable=False, comment="Question id."),
        sa.Column(
            "paper_id", sa.Integer(), nullable=False, comment="Past paper the question appeared in."
        ),
        sa.Column(
            "topic_id", sa.Integer(), nullable=False, comment="Syllabus topic the question tests."
        ),
        sa.Column(
            "question_number",
            sa.SmallInteger(),
            nullable=False,
            comment="Number of the question within its paper.",
        ),
        sa.Column("text", sa.Text(), nullable=False, comment="Question text as printed."),
        sa.Column(
            "marks", sa.SmallInteger(), nullable=False, comment="Marks the question carries."
        ),
        sa.Column(
            "difficulty",
            sa.SmallInteger(),
            nullable=False,
            comment="Difficulty as the app rates it: 1 (easy) to 5 (hard).",
        ),
        sa.Column(
            "correct_option",
            sa.String(length=1),
            nullable=False,
            comment="The right option of the multiple-choice version: A-D.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A question of a past paper, tagged with its topic; `difficulty` is the app's 1-5.",
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
            comment="Test id.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student who took the test.",
        ),
        sa.Column("subject_id", sa.Integer(), nullable=False, comment="Subject of the test."),
        sa.Column(
            "kind",
            sa.String(length=16),
            nullable=False,
            comment="topic_quiz (questions of one topic) or mock_paper (questions of one past paper).",
        ),
        sa.Column(
            "topic_id",
            sa.Integer(),
            nullable=True,
            comment="Topic of a topic quiz; null for a mock paper.",
        ),
        sa.Column(
            "paper_id",
            sa.Integer(),
            nullable=True,
            comment="Past paper of a mock paper; null for a topic quiz.",
        ),
        sa.Column(
            "question_count",
            sa.SmallInteger(),
            nullable=False,
            comment="Questions answered in the test.",
        ),
        sa.Column(
            "score_percent", sa.Float(), nullable=False, comment="Share of right answers, 0-100."
        ),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the student started the test.",
        ),
        sa.Column(
            "completed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the student finished the test.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A test a student took: a topic quiz or a mock built from a past paper.",
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
            comment="Row id.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student.",
        ),
        sa.Column("topic_id", sa.Integer(), nullable=False, comment="Topic."),
        sa.Column(
            "attempts",
            sa.Integer(),
            nullable=False,
            comment="Questions of the topic answered so far.",
        ),
        sa.Column("correct", sa.Integer(), nullable=False, comment="Of which right."),
        sa.Column("accuracy", sa.Float(), nullable=False, comment="correct / attempts, 0-1."),
        sa.Column(
            "avg_time_seconds",
            sa.Float(),
            nullable=False,
            comment="Mean seconds per answered question of the topic.",
        ),
        sa.Column(
            "last_attempted_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the student last answered a question of the topic.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="The app's running totals per student and topic (current state, not history).",
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
            comment="Row id.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student who rated.",
        ),
        sa.Column("question_id", sa.Integer(), nullable=False, comment="Question rated."),
        sa.Column(
            "difficulty_rating",
            sa.SmallInteger(),
            nullable=False,
            comment="Difficulty as the student felt it: 1 (easy) to 5 (hard).",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="A student's rating of a question's difficulty (1 easy - 5 hard).",
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
            comment="Answer id.",
        ),
        sa.Column(
            "test_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="Test the answer belongs to.",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite"),
            nullable=False,
            comment="Student who answered (denormalised from the test for per-user reads).",
        ),
        sa.Column("question_id", sa.Integer(), nullable=False, comment="Question answered."),
        sa.Column(
            "selected_option",
            sa.String(length=1),
            nullable=True,
            comment="Option the student chose (A-D); null when skipped.",
        ),
        sa.Column(
            "is_correct", sa.Boolean(), nullable=False, comment="Whether the answer was right."
        ),
        sa.Column(
            "time_taken_seconds",
            sa.Float(),
            nullable=False,
            comment="Seconds spent on the question (> 0).",
        ),
        sa.Column(
            "answered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the answer was submitted.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was created.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
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
        comment="One answered question of a test.",
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
