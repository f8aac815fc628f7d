"""`prepiq seed`: fill a contract database with synthetic PrepIQ data, deterministically for
a seed, batch by batch (bounded memory at any size), and write the ground truth apart
from the source tables, under `PREPIQ_HOME/ground_truth/`, for evaluation only."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, Integer, func, select

from core.exceptions import ConfigError, SourceNotEmptyError
from features.migrate import require_contract
from features.schema import Base, User
from synthetic.curriculum import EXAM_MONTH_DAY, Curriculum, build_curriculum
from synthetic.learners import (
    US_PER_SECOND,
    WEAK_ACCURACY,
    BatchResult,
    BatchSimulator,
    Window,
)
from synthetic.writer import BulkLoader, bulk_loader

GENERATOR_VERSION = "1"
BATCH_SIZE = 1000  # fixed: the batch layout is part of what a seed reproduces
OPTIONS = np.array(["A", "B", "C", "D"])
RATING_RATE = 0.03  # share of answers after which the student rates the question


@dataclass
class SeedSummary:
    """What a seed run wrote."""

    students: int
    seed: int
    window_start: str
    window_end: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    truth_dir: str = ""


class TruthWriter:
    """Appends ground-truth tables to Parquet files one batch at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, columns: dict[str, Any]) -> None:
        table = pa.table(columns)
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = pq.ParquetWriter(
                self.folder / f"{name}.parquet", table.schema
            )
        writer.write_table(table)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def _last_exam_year(end: date) -> int:
    return end.year if end >= date(end.year, *EXAM_MONTH_DAY) else end.year - 1


def _load_curriculum(loader: BulkLoader, cur: Curriculum, stamp: np.datetime64) -> None:
    n_subjects, n_topics, n_papers = len(cur.subject_codes), cur.n_topics, len(cur.paper_year)
    n_questions = len(cur.question_b)

    def stamps(n: int) -> dict[str, np.ndarray]:
        return {"created_at": np.full(n, stamp), "updated_at": np.full(n, stamp)}

    loader.load(
        "subjects",
        {"id": np.arange(1, n_subjects + 1), "code": cur.subject_codes, "name": cur.subject_names}
        | stamps(n_subjects),
    )
    loader.load(
        "topics",
        {
            "id": np.arange(1, n_topics + 1),
            "subject_id": cur.topic_subject + 1,
            "name": cur.topic_names,
            "position": cur.topic_position + 1,
            "syllabus_weight": cur.topic_weight.round(6),
        }
        | stamps(n_topics),
    )
    loader.load(
        "past_papers",
        {
            "id": np.arange(1, n_papers + 1),
            "subject_id": cur.paper_subject + 1,
            "exam_year": cur.paper_year,
            "paper_number": np.ones(n_papers, dtype=np.int64),
            "exam_date": np.array(cur.paper_date, dtype="datetime64[D]"),
            "title": [
                f"{cur.subject_names[s]} {y} Paper 1"
                for s, y in zip(cur.paper_subject, cur.paper_year, strict=True)
            ],
        }
        | stamps(n_papers),
    )
    # A paper's questions appear in the app when the paper is published (its exam date).
    published = np.array(cur.paper_date, dtype="datetime64[us]")[cur.question_paper]
    loader.load(
        "questions",
        {
            "id": np.arange(1, n_questions + 1),
            "paper_id": cur.question_paper + 1,
            "topic_id": cur.question_topic + 1,
            "question_number": cur.question_number,
            "text": cur.question_text,
            "marks": cur.question_marks,
            "difficulty": cur.question_app_difficulty,
            "correct_option": OPTIONS[cur.question_correct],
            "created_at": np.minimum(published, stamp),
            "updated_at": np.minimum(published, stamp),
        },
    )


def _user_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return np.array([str(uuid.UUID(bytes=row.tobytes(), version=4)) for row in raw])


def _write_batch(
    loader: BulkLoader,
    truth: TruthWriter,
    sim: BatchSimulator,
    result: BatchResult,
    first_index: int,
    first_test_id: int,
    window: Window,
) -> int:
    """Write one simulated batch; returns the next free test id."""
    cur, rng, n = sim.cur, sim.rng, sim.size
    user_ids = _user_ids(rng, n)
    start_us = window.day_us(0)
    join_us = window.day_us(sim.join_day) + (sim.study_hour * 3600 * US_PER_SECOND).astype(np.int64)
    start_date = np.datetime64(window.start, "D")

    answers = result.tables["test_answers"].columns
    tests = result.tables["tests"].columns
    activity = result.tables["study_activity"].columns
    progress = result.tables["user_progress"].columns

    last_seen = np.full(n, start_us, dtype=np.int64)
    np.maximum.at(last_seen, activity["student"], activity["stamp_us"])
    loader.load(
        "users",
        {
            "id": user_ids,
            "email": [f"student{first_index + i:07d}@students.prepiq.test" for i in range(n)],
            "display_name": [f"Student {first_index + i:07d}" for i in range(n)],
            "exam_date": start_date + sim.exam_day,
            "created_at": join_us.astype("datetime64[us]"),
            "updated_at": np.maximum(join_us, last_seen).astype("datetime64[us]"),
        },
    )
    student, subject = np.nonzero(sim.enrolled_subjects)
    loader.load(
        "user_subjects",
        {
            "user_id": user_ids[student],
            "subject_id": subject + 1,
            "enrolled_at": join_us[student].astype("datetime64[us]"),
            "created_at": join_us[student].astype("datetime64[us]"),
            "updated_at": join_us[student].astype("datetime64[us]"),
        },
    )
    # Preferences: a daily goal near the student's habit, and interest in the topics the
    # student learns fastest (so stated preferences carry signal, as they do in practice).
    learn_speed = np.where(
        sim.enrolled, sim.ceiling_gain + rng.normal(0, 0.3, sim.enrolled.shape), -np.inf
    )
    interested = np.argsort(-learn_speed, axis=1)[:, :3]
    difficulty = np.where(
        sim.ability + rng.normal(0, 0.3, n) > 0.45,
        "hard",
        np.where(sim.ability + rng.normal(0, 0.3, n) < -0.4, "easy", "medium"),
    )
    loader.load(
        "user_preferences",
        {
            "user_id": user_ids,
            "daily_goal_minutes": (np.round(sim.base_minutes * rng.uniform(0.8, 1.5, n) / 5) * 5)
            .clip(10, 600)
            .astype(np.int64),
            "preferred_difficulty": difficulty,
            "interested_topic_ids": [
                [int(t) + 1 for t in row if sim.enrolled[i, t]] for i, row in enumerate(interested)
            ],
            "reminders_enabled": rng.random(n) < 0.6,
            "created_at": join_us.astype("datetime64[us]"),
            "updated_at": join_us.astype("datetime64[us]"),
        },
    )
    activity_stamp = activity["stamp_us"].astype("datetime64[us]")
    loader.load(
        "study_activity",
        {
            "user_id": user_ids[activity["student"]],
            "activity_date": start_date + activity["day"],
            "study_minutes": activity["study_minutes"],
            "logins": activity["logins"],
            "streak_days": activity["streak_days"],
            "created_at": activity_stamp,
            "updated_at": activity_stamp,
        },
    )
    loader.load(
        "user_progress",
        {
            "user_id": user_ids[progress["student"]],
            "recorded_on": start_date + progress["day"],
            "completion_percent": progress["completion_percent"],
            "topics_completed": progress["topics_completed"],
            "topics_total": progress["topics_total"],
            "created_at": progress["stamp_us"].astype("datetime64[us]"),
            "updated_at": progress["stamp_us"].astype("datetime64[us]"),
        },
    )
    test_ids = first_test_id + np.arange(len(tests["student"]))
    completed = tests["completed_us"].astype("datetime64[us]")
    loader.load(
        "tests",
        {
            "id": test_ids,
            "user_id": user_ids[tests["student"]],
            "subject_id": tests["subject"] + 1,
            "kind": np.where(tests["kind_quiz"], "topic_quiz", "mock_paper"),
            "topic_id": [None if t < 0 else t + 1 for t in tests["topic"].tolist()],
            "paper_id": [None if p < 0 else p + 1 for p in tests["paper"].tolist()],
            "question_count": tests["question_count"],
            "score_percent": tests["score_percent"],
            "started_at": tests["started_us"].astype("datetime64[us]"),
            "completed_at": completed,
            # The app creates the test row when the student starts it.
            "created_at": tests["started_us"].astype("datetime64[us]"),
            "updated_at": completed,
        },
    )
    # Answers belong to the test of the same day: offsets of each day's tests.
    tests_before_day = np.searchsorted(tests["day"], answers["day"], side="left")
    answered = answers["answer_us"].astype("datetime64[us]")
    selected = answers["answer_selected"]
    loader.load(
        "test_answers",
        {
            "test_id": test_ids[tests_before_day + answers["answer_test"]],
            "user_id": user_ids[answers["answer_student"]],
            "question_id": answers["answer_question"] + 1,
            "selected_option": [None if s < 0 else OPTIONS[s] for s in selected.tolist()],
            "is_correct": answers["answer_correct"],
            "time_taken_seconds": answers["answer_seconds"],
            "answered_at": answered,
            "created_at": answered,
            "updated_at": answered,
        },
    )
    performance = sim.performance_at_end
    last = performance["last_attempted_us"].astype("datetime64[us]")
    loader.load(
        "topic_performance",
        {
            "user_id": user_ids[performance["student"]],
            "topic_id": performance["topic"] + 1,
            "attempts": performance["attempts"],
            "correct": performance["correct"],
            "accuracy": performance["accuracy"],
            "avg_time_seconds": performance["avg_time_seconds"],
            "last_attempted_at": last,
            "created_at": last,
            "updated_at": last,
        },
    )
    # Ratings: a few answers are followed by the student rating the question's difficulty.
    rated = np.flatnonzero(rng.random(len(answered)) < RATING_RATE)
    pair = (
        answers["answer_student"][rated] * len(cur.question_b) + answers["answer_question"][rated]
    )
    _, first = np.unique(pair, return_index=True)
    rated = rated[np.sort(first)]
    gap = cur.question_b[answers["answer_question"][rated]] - answers["answer_theta"][rated]
    rating = np.clip(np.round(3 + 0.9 * gap + rng.normal(0, 0.7, len(rated))), 1, 5).astype(
        np.int64
    )
    loader.load(
        "question_ratings",
        {
            "user_id": user_ids[answers["answer_student"][rated]],
            "question_id": answers["answer_question"][rated] + 1,
            "difficulty_rating": rating,
            "created_at": answered[rated],
            "updated_at": answered[rated],
        },
    )

    mastery = result.truth["mastery"].columns
    truth.write(
        "mastery",
        {
            "user_id": user_ids[mastery["student"]],
            "topic_id": mastery["topic"] + 1,
            "as_of": start_date + mastery["day"],
            "theta": mastery["theta"],
            "expected_accuracy": mastery["expected_accuracy"],
            "is_weak": mastery["is_weak"],
            "expected_score_gain": mastery["expected_score_gain"],
        },
    )
    completion = result.truth["completion"].columns
    truth.write(
        "students",
        {
            "user_id": user_ids,
            "cluster": sim.cluster,
            "ability": sim.ability.round(4),
            "aware_of_weak_topics": sim.aware,
            "join_date": start_date + sim.join_day,
            "dropped_out_by_plus_90d": completion["dropped_out"],
            **{k: completion[k].round(3) for k in completion if k.startswith("completion_plus_")},
        },
    )
    return int(test_ids[-1]) + 1 if len(test_ids) else first_test_id


def _write_curriculum_truth(truth: TruthWriter, cur: Curriculum) -> None:
    held = cur.held_back
    truth.write(
        "next_papers",
        {
            "subject_id": np.asarray(held["subject"]) + 1,
            "exam_year": held["exam_year"],
            "question_number": held["number"],
            "topic_id": np.asarray(held["topic"]) + 1,
            "text": held["text"],
            "marks": held["marks"],
            "difficulty": held["difficulty"],
            "classic_id": held["classic"],
        },
    )
    truth.write(
        "questions",
        {
            "question_id": np.arange(1, len(cur.question_b) + 1),
            "irt_difficulty": cur.question_b.round(4),
            "irt_discrimination": cur.question_a.round(4),
            "classic_id": cur.question_classic,
        },
    )


def source_user_count(engine: Engine) -> int:
    """How many users the source holds."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(User)).scalar_one())


def seed_source(
    engine: Engine,
    *,
    students: int,
    seed: int,
    truth_dir: Path,
    end_date: date | None = None,
    days: int = 180,
    reset: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SeedSummary:
    """Fill `engine`'s contract tables with `students` synthetic students over `days` days
    ending on `end_date` (default: yesterday, UTC), and write the ground truth to `truth_dir`.

    Refuses a source that already holds users unless `reset` is set (then every contract
    table is emptied first). All rows are written in one transaction: a failure leaves the
    source as it was.
    """
    if students < 1:
        raise ConfigError(f"--students must be at least 1 (got {students})")
    if days < 60:
        raise ConfigError(f"--days must be at least 60 (got {days})")
    require_contract(engine)
    existing = source_user_count(engine)
    if existing and not reset:
        raise SourceNotEmptyError(
            f"the source already holds {existing} users; pass --reset to replace its rows "
            "with synthetic data"
        )
    started = time.perf_counter()
    # Default: the history ends with yesterday, so every row lies in the past.
    end = end_date or date.today() - timedelta(days=1)
    window = Window(start=end - timedelta(days=days - 1), days=days)
    curriculum = build_curriculum(
        np.random.default_rng(np.random.SeedSequence([seed, 0])), _last_exam_year(end)
    )
    staging = truth_dir.with_name(truth_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    truth = TruthWriter(staging)
    summary = SeedSummary(students, seed, window.start.isoformat(), window.end.isoformat())
    try:
        with bulk_loader(engine) as loader:
            if reset:  # in the same transaction: a failed seed keeps the old rows
                loader.clear([t.name for t in reversed(Base.metadata.sorted_tables)])
            _load_curriculum(loader, curriculum, np.datetime64(window.start, "us"))
            _write_curriculum_truth(truth, curriculum)
            next_test_id = 1
            for batch, first in enumerate(range(0, students, BATCH_SIZE)):
                size = min(BATCH_SIZE, students - first)
                rng = np.random.default_rng(np.random.SeedSequence([seed, 1, batch]))
                sim = BatchSimulator(curriculum, rng, size, window)
                result = sim.run()
                next_test_id = _write_batch(loader, truth, sim, result, first, next_test_id, window)
                if progress:
                    progress(first + size, students)
            loader.reset_sequences(
                [
                    t.name
                    for t in Base.metadata.sorted_tables
                    if "id" in t.c and isinstance(t.c.id.type, Integer)
                ]
            )
            summary.rows = dict(loader.rows_written)
    except BaseException:
        truth.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    truth.close()
    summary.seconds = round(time.perf_counter() - started, 2)
    (staging / "manifest.json").write_text(
        json.dumps(
            asdict(summary)
            | {
                "generator_version": GENERATOR_VERSION,
                "weak_accuracy_threshold": WEAK_ACCURACY,
                "held_back_exam_year": _last_exam_year(end) + 1,
                "note": "Ground truth for evaluation only; never a training input.",
            },
            indent=2,
        )
    )
    shutil.rmtree(truth_dir, ignore_errors=True)
    staging.rename(truth_dir)
    summary.truth_dir = str(truth_dir)
    return summary


__all__ = ["SeedSummary", "seed_source", "source_user_count"]
