"""Serving's online inputs (`serving.online_features`) equal what the offline builders
give training for the same students at the same moment: every student's rows read
whole, as a snapshot holds them, and the builder run over all of them. Also the
per-student input cache: a hit returns the same input, a changed row rebuilds it."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from features import focus, progress, recommend
from features.frames import SourceFrames, read_table
from serving.online_features import InputCache, OnlineFeatures
from tests.conftest import END_DATE

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
WINDOW_DAYS = 28
STUDENTS = 4


def offline(engine: Engine, tables: tuple[str, ...]) -> SourceFrames:
    """Every student's rows of `tables`, whole (what a snapshot holds)."""
    return SourceFrames({name: read_table(engine, name) for name in tables})


def one_student(frame: pd.DataFrame, user_id: str) -> pd.DataFrame:
    return frame[frame["user_id"] == user_id].reset_index(drop=True)


@pytest.fixture(scope="module")
def source(seeded_sqlite: tuple[Engine, Path]) -> Engine:
    return seeded_sqlite[0]


@pytest.fixture(scope="module")
def students(source: Engine) -> list[str]:
    """A few students with answers, ratings and progress records (and the first one)."""
    with source.connect() as conn:
        rated = conn.execute(
            text(
                "SELECT DISTINCT r.user_id FROM question_ratings r "
                "JOIN user_progress p ON p.user_id = r.user_id ORDER BY r.user_id"
            )
        ).scalars()
        return [str(u) for u in rated][:STUDENTS]


@pytest.fixture(scope="module")
def online(source: Engine) -> OnlineFeatures:
    return OnlineFeatures(source, 300, cache_seconds=0, clock=lambda: AS_OF)


Build = Callable[[OnlineFeatures, str], pd.DataFrame]
CASES: dict[str, tuple[tuple[str, ...], Callable[[SourceFrames], pd.DataFrame], Build]] = {
    "progress": (
        progress.TABLES,
        lambda frames: progress.daily_sequences(frames, AS_OF, WINDOW_DAYS),
        lambda online, user: online.progress_inputs(user, WINDOW_DAYS),
    ),
    "focus": (
        focus.TABLES,
        lambda frames: focus.topic_test_stats(frames, AS_OF),
        lambda online, user: online.focus_inputs(user),
    ),
    "recommend": (
        recommend.TABLES,
        lambda frames: recommend.candidate_topics(frames, AS_OF),
        lambda online, user: online.recommend_inputs(user),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_online_inputs_equal_the_offline_builders_output(
    case: str, source: Engine, students: list[str], online: OnlineFeatures
) -> None:
    tables, build_offline, build_online = CASES[case]
    everyone = build_offline(offline(source, ("users", *tables)))
    assert len(students) == STUDENTS
    for user in students:
        expected = one_student(everyone, user)
        got = build_online(online, user)
        assert not expected.empty
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_exact=False)


def test_recommend_inputs_use_every_students_ratings(
    source: Engine, students: list[str], online: OnlineFeatures
) -> None:
    """`mean_rating` is a topic's mean over all students' ratings, as in training; the
    student's own ratings alone would give other values."""
    user = students[0]
    got = online.recommend_inputs(user)
    own_only = recommend.candidate_topics(online.student_rows(user, recommend.TABLES), AS_OF)
    assert not got["mean_rating"].equals(own_only["mean_rating"])


def test_cache_returns_the_input_until_a_row_of_the_student_changes(
    source: Engine, students: list[str]
) -> None:
    features = OnlineFeatures(source, 300, cache_seconds=60, clock=lambda: AS_OF)
    user = students[1]
    first = features.focus_inputs(user)
    first.loc[:, "attempts"] = -1.0  # a caller's edit must not reach the cache
    second = features.focus_inputs(user)
    assert (features.cache.hits, features.cache.misses) == (1, 1)
    assert (second["attempts"] > 0).all()
    with source.begin() as conn:
        old = conn.execute(
            text("SELECT MAX(updated_at) FROM test_answers WHERE user_id = :u"), {"u": user}
        ).scalar_one()
        newest = text(
            "UPDATE test_answers SET updated_at = :t WHERE id = "
            "(SELECT MAX(id) FROM test_answers WHERE user_id = :u)"
        )
        conn.execute(newest, {"t": datetime(2099, 1, 1), "u": user})
    try:
        third = features.focus_inputs(user)
        assert features.cache.misses == 2
        pd.testing.assert_frame_equal(third, second)
    finally:
        with source.begin() as conn:
            conn.execute(newest, {"t": old, "u": user})


def test_input_cache_expires_and_keeps_its_size() -> None:
    cache = InputCache(seconds=0.05, entries=2)
    frame = pd.DataFrame({"x": [1.0]})
    builds = []

    def build() -> pd.DataFrame:
        builds.append(1)
        return frame

    for key in ("a", "a", "b", "c"):
        cache.get_or_build(key, build)
    assert len(builds) == 3 and len(cache._items) == 2
    import time

    time.sleep(0.06)
    cache.get_or_build("c", build)
    assert len(builds) == 4
    off = InputCache(seconds=0)  # 0 turns the cache off: every call builds, nothing kept
    off.get_or_build("c", build)
    off.get_or_build("c", build)
    assert len(builds) == 6 and not off._items


def test_catalogue_is_kept_while_its_tables_and_the_day_are_unchanged(
    source: Engine, students: list[str]
) -> None:
    """A refresh over unchanged tables keeps the copy (and so every input built on it);
    a new rating or another day reloads it."""
    today = [AS_OF]
    features = OnlineFeatures(source, 300, cache_seconds=0, clock=lambda: today[0])
    first = features.catalogue
    assert features.refresh_catalogue() is False and features.catalogue is first
    user = students[0]
    with source.begin() as conn:
        unrated = conn.execute(
            text(
                "SELECT MIN(id) FROM questions WHERE id NOT IN "
                "(SELECT question_id FROM question_ratings WHERE user_id = :u)"
            ),
            {"u": user},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO question_ratings (user_id, question_id, difficulty_rating, "
                "created_at, updated_at) VALUES (:u, :q, 5, :t, :t)"
            ),
            {"u": user, "q": unrated, "t": AS_OF},
        )
    try:
        assert features.refresh_catalogue() is True
        rated = features.catalogue
        assert rated is not first and rated.loaded_at > first.loaded_at
        assert features.refresh_catalogue() is False and features.catalogue is rated
        today[0] = AS_OF + timedelta(days=1)
        assert features.refresh_catalogue() is True and features.catalogue.day == today[0].date()
    finally:
        with source.begin() as conn:
            conn.execute(
                text("DELETE FROM question_ratings WHERE user_id = :u AND question_id = :q"),
                {"u": user, "q": unrated},
            )


def test_callers_waiting_for_a_failing_first_load_share_its_one_attempt() -> None:
    """A service started with the source down loads the catalogue on first use. Callers
    that arrive while that one attempt runs share its failure (one connect, not one
    connect timeout each in a row); a caller after it tries again. The source is a real
    refused port (nothing listens on 127.0.0.1:1)."""
    engine = create_engine("postgresql+psycopg://prepiq@127.0.0.1:1/prepiq")
    features = OnlineFeatures(engine, catalogue_ttl_seconds=60.0)  # starts, unloaded
    attempts: list[int] = []
    go = threading.Event()

    @event.listens_for(engine, "do_connect")
    def slow_connect(*_: object) -> None:  # the first attempt waits for the second caller
        attempts.append(1)
        go.wait(timeout=30)

    errors: dict[str, BaseException] = {}

    def call(name: str) -> None:
        try:
            features.catalogue  # noqa: B018 (the property loads)
        except OperationalError as exc:
            errors[name] = exc

    first = threading.Thread(target=call, args=("first",))
    first.start()
    while not attempts:
        time.sleep(0.01)
    second = threading.Thread(target=call, args=("second",))
    second.start()
    while not _waits_in_load(second):  # queued behind the attempt in flight
        time.sleep(0.01)
    go.set()
    first.join(30)
    second.join(30)
    assert set(errors) == {"first", "second"} and len(attempts) == 1
    call("third")  # after the failure: a new attempt
    assert len(attempts) == 2
    engine.dispose()


def _waits_in_load(thread: threading.Thread) -> bool:
    """Whether `thread` is blocked on the load's lock (past reading the failure count)."""
    lines, first = inspect.getsourcelines(OnlineFeatures._load)
    waiting_at = first + next(i for i, line in enumerate(lines) if "with self._loading" in line)
    frame = sys._current_frames().get(thread.ident or -1)
    return frame is not None and frame.f_code.co_name == "_load" and frame.f_lineno == waiting_at
