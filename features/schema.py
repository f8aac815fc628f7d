"""The data contract: the PrepIQ tables the platform reads from Supabase, as SQLAlchemy 2
models. `docs/data-contract.md` describes every column; the Alembic migrations under
`features/migrations/` create exactly these tables on PostgreSQL and SQLite.

User ids are UUIDs (Supabase Auth's `auth.users.id`); they travel as canonical strings.
Every table the pipeline reads incrementally carries `created_at` and `updated_at`; the
migration adds triggers that bump `updated_at` on every UPDATE, so a watermark on it
catches changes made by the app.
"""

from __future__ import annotations

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
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class User(Base):
    """A student of the app (one row per Supabase Auth user)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(UserId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)
    display_name: Mapped[str] = mapped_column(String(120), nullable=False)
    exam_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (Index(None, "updated_at"),)


class Subject(Base):
    """An exam subject (Mathematics, Physics, ...)."""

    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Topic(Base):
    """A syllabus topic of a subject; `syllabus_weight` is its share of the exam's marks."""

    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(160), nullable=False)
    position: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    syllabus_weight: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("subject_id", "name"),
        CheckConstraint("syllabus_weight >= 0 AND syllabus_weight <= 1", name="weight_range"),
    )


class UserSubject(Base):
    """Which subjects a student is enrolled in (completion counts these syllabi)."""

    __tablename__ = "user_subjects"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (Index(None, "updated_at"),)


class PastPaper(Base):
    """A past exam paper of a subject, sat on `exam_date` in `exam_year`."""

    __tablename__ = "past_papers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    exam_year: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    paper_number: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=1)
    exam_date: Mapped[date] = mapped_column(Date, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (UniqueConstraint("subject_id", "exam_year", "paper_number"),)


class Question(Base):
    """A question of a past paper, tagged with its topic; `difficulty` is the app's 1-5."""

    __tablename__ = "questions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[int] = mapped_column(ForeignKey("past_papers.id"), nullable=False)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), nullable=False)
    question_number: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    marks: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    difficulty: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    correct_option: Mapped[str] = mapped_column(String(1), nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    topic_id: Mapped[int | None] = mapped_column(ForeignKey("topics.id"))
    paper_id: Mapped[int | None] = mapped_column(ForeignKey("past_papers.id"))
    question_count: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    score_percent: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("tests.id"), nullable=False)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), nullable=False)
    selected_option: Mapped[str | None] = mapped_column(String(1))
    is_correct: Mapped[bool] = mapped_column(Boolean, nullable=False)
    time_taken_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    activity_date: Mapped[date] = mapped_column(Date, nullable=False)
    study_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    logins: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    streak_days: Mapped[int] = mapped_column(Integer, nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    recorded_on: Mapped[date] = mapped_column(Date, nullable=False)
    completion_percent: Mapped[float] = mapped_column(Float, nullable=False)
    topics_completed: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    topics_total: Mapped[int] = mapped_column(SmallInteger, nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    correct: Mapped[int] = mapped_column(Integer, nullable=False)
    accuracy: Mapped[float] = mapped_column(Float, nullable=False)
    avg_time_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    last_attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(80), nullable=False)
    model_version: Mapped[str] = mapped_column(String(40), nullable=False)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    request_id: Mapped[str] = mapped_column(String(64), nullable=False)
    inputs_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = _created()
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        Index(None, "model_name", "created_at"),
        Index(None, "created_at"),
    )


class UserPreference(Base):
    """A student's stated learning preferences."""

    __tablename__ = "user_preferences"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    daily_goal_minutes: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    preferred_difficulty: Mapped[str] = mapped_column(String(8), nullable=False)
    interested_topic_ids: Mapped[list[int]] = mapped_column(JsonDocument, nullable=False)
    reminders_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
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
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), nullable=False)
    difficulty_rating: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    __table_args__ = (
        UniqueConstraint("user_id", "question_id"),
        CheckConstraint("difficulty_rating BETWEEN 1 AND 5", name="rating_range"),
        Index(None, "question_id"),
        Index(None, "updated_at"),
    )


CONTRACT_TABLES: tuple[str, ...] = tuple(t.name for t in Base.metadata.sorted_tables)
"""Every contract table, parents before children (the order to load and to check)."""
