"""The data contract: the PrepIQ tables the platform reads from Supabase, as SQLAlchemy 2
models. `docs/data-contract.md` describes every column; the Alembic migrations under
`features/migrations/` create exactly these tables on PostgreSQL and SQLite.

User ids are UUIDs (Supabase Auth's `auth.users.id`); they travel as canonical strings.
Every table the pipeline reads incrementally carries `created_at` and `updated_at`; the
migration adds triggers that bump `updated_at` on every UPDATE, so a watermark on it
catches changes made by the app.
"""

from __future__ import annotations

import inspect
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Native uuid on PostgreSQL, the canonical 36-character text on SQLite; str in Python.
UserId = Uuid(as_uuid=False).with_variant(String(36), "sqlite")
# jsonb on PostgreSQL (indexable, as Supabase uses it), JSON text elsewhere.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
# BIGINT ids on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _created() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        comment="When the row was created.",
    )


def _updated() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
        comment="When the row last changed (a trigger keeps it current); the ingest watermark.",
    )


class User(Base):
    """A student of the app (one row per Supabase Auth user)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(
        UserId, primary_key=True, comment="Supabase Auth user id (auth.users.id)."
    )
    email: Mapped[str] = mapped_column(
        String(320), nullable=False, unique=True, comment="Login e-mail, unique."
    )
    display_name: Mapped[str] = mapped_column(
        String(120), nullable=False, comment="Name shown in the app."
    )
    exam_date: Mapped[date | None] = mapped_column(
        Date, comment="Date of the student's target exam; null when not set."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (Index(None, "updated_at"),)


class Subject(Base):
    """An exam subject (Mathematics, Physics, ...)."""

    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Subject id.")
    code: Mapped[str] = mapped_column(
        String(32), nullable=False, unique=True, comment="Short unique code (MATH, PHYS, ...)."
    )
    name: Mapped[str] = mapped_column(
        String(120), nullable=False, comment="Subject name shown in the app."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Topic(Base):
    """A syllabus topic of a subject; `syllabus_weight` is its share of the exam's marks."""

    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Topic id.")
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id"), nullable=False, comment="Subject the topic belongs to."
    )
    name: Mapped[str] = mapped_column(
        String(160), nullable=False, comment="Topic name, unique within its subject."
    )
    position: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        comment="Order of the topic in the subject's syllabus (1 = first).",
    )
    syllabus_weight: Mapped[float] = mapped_column(
        Float,
        nullable=False,
        comment="Share of the subject's exam marks the syllabus gives the topic (0-1; a subject's weights sum to 1).",
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("subject_id", "name"),
        CheckConstraint("syllabus_weight >= 0 AND syllabus_weight <= 1", name="weight_range"),
    )


class UserSubject(Base):
    """Which subjects a student is enrolled in (completion counts these syllabi)."""

    __tablename__ = "user_subjects"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"), primary_key=True, comment="Student."
    )
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id"), primary_key=True, comment="Subject the student is enrolled in."
    )
    enrolled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, comment="When the student enrolled."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (Index(None, "updated_at"),)


class PastPaper(Base):
    """A past exam paper of a subject, sat on `exam_date` in `exam_year`."""

    __tablename__ = "past_papers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Paper id.")
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id"), nullable=False, comment="Subject of the paper."
    )
    exam_year: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Year the exam was sat."
    )
    paper_number: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        default=1,
        comment="Paper number within the year's exam (1, 2, ...).",
    )
    exam_date: Mapped[date] = mapped_column(Date, nullable=False, comment="Date the exam was sat.")
    title: Mapped[str] = mapped_column(
        String(200), nullable=False, comment="Title shown in the app."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (UniqueConstraint("subject_id", "exam_year", "paper_number"),)


class Question(Base):
    """A question, tagged with its topic, from a past paper or (paper null) written for the
    app; `difficulty` is the app's 1-5."""

    __tablename__ = "questions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Question id.")
    paper_id: Mapped[int | None] = mapped_column(
        ForeignKey("past_papers.id"),
        comment="Past paper the question appeared in; null for a question not from a paper.",
    )
    topic_id: Mapped[int] = mapped_column(
        ForeignKey("topics.id"), nullable=False, comment="Syllabus topic the question tests."
    )
    question_number: Mapped[int | None] = mapped_column(
        SmallInteger, comment="Number of the question within its paper; null without a paper."
    )
    text: Mapped[str] = mapped_column(Text, nullable=False, comment="Question text as printed.")
    marks: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Marks the question carries."
    )
    difficulty: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        comment="Difficulty as the app rates it: 1 (easy) to 5 (hard).",
    )
    correct_option: Mapped[str] = mapped_column(
        String(1), nullable=False, comment="The right option of the multiple-choice version: A-D."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("paper_id", "question_number"),
        CheckConstraint("difficulty BETWEEN 1 AND 5", name="difficulty_range"),
        CheckConstraint("marks > 0", name="marks_positive"),
        CheckConstraint("correct_option IN ('A','B','C','D')", name="option_set"),
        Index(None, "topic_id"),
        Index(None, "updated_at"),
    )


class Test(Base):
    """A test a student took: a topic quiz or a mock built from a past paper."""

    __tablename__ = "tests"
    __test__ = False  # not a pytest class
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Test id.")
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"), nullable=False, comment="Student who took the test."
    )
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id"), nullable=False, comment="Subject of the test."
    )
    kind: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        comment="topic_quiz (questions of one topic) or mock_paper (questions of one past paper).",
    )
    topic_id: Mapped[int | None] = mapped_column(
        ForeignKey("topics.id"), comment="Topic of a topic quiz; null for a mock paper."
    )
    paper_id: Mapped[int | None] = mapped_column(
        ForeignKey("past_papers.id"), comment="Past paper of a mock paper; null for a topic quiz."
    )
    question_count: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Questions answered in the test."
    )
    score_percent: Mapped[float] = mapped_column(
        Float, nullable=False, comment="Share of right answers, 0-100."
    )
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, comment="When the student started the test."
    )
    completed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, comment="When the student finished the test."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        CheckConstraint("kind IN ('topic_quiz','mock_paper')", name="kind_set"),
        CheckConstraint("score_percent >= 0 AND score_percent <= 100", name="score_range"),
        Index(None, "user_id", "started_at"),
        Index(None, "updated_at"),
    )


class TestAnswer(Base):
    """One answered question of a test."""

    __tablename__ = "test_answers"
    __test__ = False
    id: Mapped[int] = mapped_column(
        BigId, primary_key=True, autoincrement=True, comment="Answer id."
    )
    test_id: Mapped[int] = mapped_column(
        ForeignKey("tests.id"), nullable=False, comment="Test the answer belongs to."
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"),
        nullable=False,
        comment="Student who answered (denormalised from the test for per-user reads).",
    )
    question_id: Mapped[int] = mapped_column(
        ForeignKey("questions.id"), nullable=False, comment="Question answered."
    )
    selected_option: Mapped[str | None] = mapped_column(
        String(1), comment="Option the student chose (A-D); null when skipped."
    )
    is_correct: Mapped[bool] = mapped_column(
        Boolean, nullable=False, comment="Whether the answer was right."
    )
    time_taken_seconds: Mapped[float | None] = mapped_column(
        Float, comment="Seconds spent on the question (> 0); null when the app does not time it."
    )
    answered_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, comment="When the answer was submitted."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        CheckConstraint("time_taken_seconds > 0", name="time_positive"),
        CheckConstraint(
            "selected_option IS NULL OR selected_option IN ('A','B','C','D')", name="option_set"
        ),
        Index(None, "user_id", "answered_at"),
        Index(None, "test_id"),
        Index(None, "question_id"),
        Index(None, "updated_at"),
    )


class StudyActivity(Base):
    """A student's study on one day: minutes, logins and the streak it extends."""

    __tablename__ = "study_activity"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Row id.")
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False, comment="Student.")
    activity_date: Mapped[date] = mapped_column(
        Date, nullable=False, comment="Day of the activity (UTC)."
    )
    study_minutes: Mapped[int] = mapped_column(
        Integer, nullable=False, comment="Minutes studied that day (0-1440)."
    )
    logins: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Times the student opened the app that day."
    )
    streak_days: Mapped[int] = mapped_column(
        Integer, nullable=False, comment="Consecutive days of study up to and including this one."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("user_id", "activity_date"),
        CheckConstraint("study_minutes >= 0 AND study_minutes <= 1440", name="minutes_range"),
        CheckConstraint("logins >= 0", name="logins_nonnegative"),
        CheckConstraint("streak_days >= 0", name="streak_nonnegative"),
        Index(None, "updated_at"),
    )


class UserProgress(Base):
    """Syllabus completion of a student as recorded by the app on a day."""

    __tablename__ = "user_progress"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Row id.")
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False, comment="Student.")
    recorded_on: Mapped[date] = mapped_column(
        Date, nullable=False, comment="Day the app recorded the progress (UTC)."
    )
    completion_percent: Mapped[float] = mapped_column(
        Float,
        nullable=False,
        comment="Syllabus completion over the student's enrolled subjects, weighted by syllabus weight, 0-100.",
    )
    topics_completed: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        comment="Topics of the enrolled syllabi the student has completed.",
    )
    topics_total: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Topics of the enrolled syllabi."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("user_id", "recorded_on"),
        CheckConstraint(
            "completion_percent >= 0 AND completion_percent <= 100", name="completion_range"
        ),
        Index(None, "updated_at"),
    )


class TopicPerformance(Base):
    """The app's running totals per student and topic (current state, not history)."""

    __tablename__ = "topic_performance"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Row id.")
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False, comment="Student.")
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), nullable=False, comment="Topic.")
    attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, comment="Questions of the topic answered so far."
    )
    correct: Mapped[int] = mapped_column(Integer, nullable=False, comment="Of which right.")
    accuracy: Mapped[float] = mapped_column(
        Float, nullable=False, comment="correct / attempts, 0-1."
    )
    avg_time_seconds: Mapped[float] = mapped_column(
        Float, nullable=False, comment="Mean seconds per answered question of the topic."
    )
    last_attempted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        comment="When the student last answered a question of the topic.",
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("user_id", "topic_id"),
        CheckConstraint("accuracy >= 0 AND accuracy <= 1", name="accuracy_range"),
        CheckConstraint("correct >= 0 AND correct <= attempts", name="correct_le_attempts"),
        Index(None, "updated_at"),
    )


class ModelPrediction(Base):
    """Every prediction the serving layer made, for audit, monitoring and archiving."""

    __tablename__ = "model_predictions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Row id.")
    model_name: Mapped[str] = mapped_column(
        String(80), nullable=False, comment="Registered model name (prepiq-focus-area, ...)."
    )
    model_version: Mapped[str] = mapped_column(
        String(40), nullable=False, comment="Registered model version that answered."
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id"),
        comment="Student the prediction is about; null when the inputs came in the request.",
    )
    request_id: Mapped[str] = mapped_column(
        String(64), nullable=False, comment="Request id returned to the caller in a header."
    )
    inputs_digest: Mapped[str] = mapped_column(
        String(64),
        nullable=False,
        comment="SHA-256 of the canonical model inputs (for deduplication and drift checks).",
    )
    request: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, comment="The request body as received."
    )
    response: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, comment="The response body as sent."
    )
    latency_ms: Mapped[float] = mapped_column(
        Float, nullable=False, comment="Time the service took to answer, in milliseconds."
    )
    created_at: Mapped[datetime] = _created()
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        Index(None, "model_name", "created_at"),
        Index(None, "created_at"),
        # One row per model answer: the service's log inserts are idempotent on it, so a
        # spool replayed after a crash stores nothing twice (serving.prediction_log).
        Index(None, "request_id", "model_name", "created_at", unique=True),
    )


class UserPreference(Base):
    """A student's stated learning preferences."""

    __tablename__ = "user_preferences"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"), primary_key=True, comment="Student."
    )
    daily_goal_minutes: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, comment="Minutes a day the student aims to study."
    )
    preferred_difficulty: Mapped[str] = mapped_column(
        String(8), nullable=False, comment="easy, medium or hard."
    )
    interested_topic_ids: Mapped[list[int]] = mapped_column(
        JsonDocument,
        nullable=False,
        comment="Topic ids the student marked as interesting (JSON array).",
    )
    reminders_enabled: Mapped[bool] = mapped_column(
        Boolean, nullable=False, comment="Whether the student wants study reminders."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        CheckConstraint("preferred_difficulty IN ('easy','medium','hard')", name="difficulty_set"),
        CheckConstraint("daily_goal_minutes > 0", name="goal_positive"),
        Index(None, "updated_at"),
    )


class QuestionRating(Base):
    """A student's rating of a question's difficulty (1 easy - 5 hard)."""

    __tablename__ = "question_ratings"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, comment="Row id.")
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"), nullable=False, comment="Student who rated."
    )
    question_id: Mapped[int] = mapped_column(
        ForeignKey("questions.id"), nullable=False, comment="Question rated."
    )
    difficulty_rating: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        comment="Difficulty as the student felt it: 1 (easy) to 5 (hard).",
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("user_id", "question_id"),
        CheckConstraint("difficulty_rating BETWEEN 1 AND 5", name="rating_range"),
        Index(None, "question_id"),
        Index(None, "updated_at"),
    )


# Each table's docstring is its comment in the database (and in docs/data-contract.md).
for _mapper in Base.registry.mappers:
    assert isinstance(_mapper.local_table, Table)
    _mapper.local_table.comment = inspect.cleandoc(_mapper.class_.__doc__ or "")

CONTRACT_TABLES: tuple[str, ...] = tuple(t.name for t in Base.metadata.sorted_tables)
"""Every contract table, parents before children (the order to load and to check)."""
