"""The materialised store (`serving.feature_store`): what a request reads from it equals
what the request would have built itself, on SQLite and PostgreSQL; a changed row, a
new day, a new catalogue copy or an old entry is never served; a refresh rebuilds only
what changed; the tracked students are the requested and the most active, capped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from serving.feature_store import MaterialisedInputs
from serving.online_features import OnlineFeatures
from tests.conftest import END_DATE, migrated_engine

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 59, tzinfo=UTC)
WINDOW_DAYS = 28
SLOTS = (("progress", WINDOW_DAYS), ("focus", None), ("recommend", None))


class Clock:
    """A settable monotonic clock for the store's entry ages."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_over(engine: Engine, students: int = 2000) -> tuple[MaterialisedInputs, Clock]:
    online = OnlineFeatures(engine, 300, cache_seconds=0, clock=lambda: AS_OF)
    clock = Clock()
    store = MaterialisedInputs(online, students, 30.0, 300.0, clock=clock)
    for kind, extra in SLOTS:
        store.want(kind, extra)
    online.materialised = store
    return store, clock


def served(store: MaterialisedInputs, kind: str, extra: object, user: str) -> pd.DataFrame | None:
    online = store.online
    entry = store.lookup(
        kind,
        extra,
        user,
        online.stamp(kind, user),
        online.now().date(),
        online.catalogue.loaded_at,
    )
    return None if entry is None else entry.rows()


def assert_served_equals_built(store: MaterialisedInputs, users: list[str]) -> None:
    online = store.online
    for kind, extra in SLOTS:
        for user in users:
            got = served(store, kind, extra, user)
            assert got is not None, (kind, user)
            built = online.build(kind, user, extra, online.catalogue).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, built, check_exact=True, obj=f"{kind} {user}")


@pytest.fixture(scope="module")
def source(seeded_sqlite: tuple[Engine, Path]) -> Engine:
    return seeded_sqlite[0]


@pytest.fixture
def refreshed(source: Engine) -> tuple[MaterialisedInputs, Clock]:
    store, clock = store_over(source)
    report = store.refresh()
    assert report.students > 100
    assert report.rebuilt == {f"progress:{WINDOW_DAYS}": report.students} | {
        "focus": report.students,
        "recommend": report.students,
    }
    return store, clock


def test_store_serves_what_a_request_would_build_on_sqlite(
    refreshed: tuple[MaterialisedInputs, Clock],
) -> None:
    store, _ = refreshed
    users = sorted(store._entries[("focus", None)])[::12]  # 25 students across the batches
    assert_served_equals_built(store, users)
    # Through the request path: the store answers and nothing is built.
    online = store.online
    before = store.hits
    got = online.focus_inputs(users[0])
    got.loc[:, "attempts"] = -1.0  # a caller's edit must not reach the store
    assert (online.focus_inputs(users[0])["attempts"] > 0).all()
    assert store.hits == before + 2


def test_store_serves_what_a_request_would_build_on_postgres(pg_url: str, tmp_path: Path) -> None:
    from synthetic.generator import seed_source

    engine = migrated_engine(pg_url)
    seed_source(
        engine, students=40, seed=8, days=90, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    store, _ = store_over(engine)
    assert store.refresh().students > 20
    assert_served_equals_built(store, sorted(store._entries[("focus", None)])[:10])
    engine.dispose()


@pytest.fixture
def restored_answer(source: Engine) -> Iterator[tuple[str, datetime]]:
    """A student whose newest answer's `updated_at` the test may change (put back after)."""
    with source.connect() as conn:
        user, old = conn.execute(
            text(
                "SELECT user_id, MAX(updated_at) FROM test_answers GROUP BY user_id "
                "ORDER BY user_id LIMIT 1"
            )
        ).one()
    yield str(user), old
    with source.begin() as conn:
        conn.execute(NEWEST_ANSWER, {"t": old, "u": user})


NEWEST_ANSWER = text(
    "UPDATE test_answers SET updated_at = :t WHERE id = "
    "(SELECT MAX(id) FROM test_answers WHERE user_id = :u)"
)


def test_a_changed_row_is_not_served_until_the_refresh_rebuilds_it(
    refreshed: tuple[MaterialisedInputs, Clock],
    source: Engine,
    restored_answer: tuple[str, datetime],
) -> None:
    store, _ = refreshed
    user, _ = restored_answer
    assert served(store, "focus", None, user) is not None
    with source.begin() as conn:
        conn.execute(NEWEST_ANSWER, {"t": datetime(2099, 1, 1), "u": user})
    assert served(store, "focus", None, user) is None  # the request builds it itself
    assert served(store, "recommend", None, user) is None
    assert served(store, "progress", WINDOW_DAYS, user) is not None  # reads no answers
    report = store.refresh()
    assert report.rebuilt == {f"progress:{WINDOW_DAYS}": 0, "focus": 1, "recommend": 1}
    assert_served_equals_built(store, [user])


def test_a_repeat_request_reuses_the_output_kept_with_its_stored_input(
    refreshed: tuple[MaterialisedInputs, Clock],
    source: Engine,
    restored_answer: tuple[str, datetime],
) -> None:
    """An output is kept with the stored input it was computed from, per key (model and
    request options); a changed row is never answered from it, and the rebuilt entry
    computes afresh."""
    store, _ = refreshed
    online = store.online
    user, _ = restored_answer
    seen: list[pd.DataFrame] = []

    def compute(frame: pd.DataFrame) -> int:
        seen.append(frame)
        return len(seen)

    first = online.student_inputs("focus", user)
    assert first.entry is not None and first.output("model-a", compute) == 1
    again = online.student_inputs("focus", user)
    assert again.output("model-a", compute) == 1 and len(seen) == 1
    assert again.output("model-b", compute) == 2  # another model or options: computed
    pd.testing.assert_frame_equal(seen[0], again.frame)
    with source.begin() as conn:
        conn.execute(NEWEST_ANSWER, {"t": datetime(2099, 1, 1), "u": user})
    changed = online.student_inputs("focus", user)  # built by the request, nothing kept
    assert changed.entry is None
    assert changed.output("model-a", compute) == 3 and changed.output("model-a", compute) == 4
    store.refresh()
    rebuilt = online.student_inputs("focus", user)
    assert rebuilt.entry is not None and rebuilt.output("model-a", compute) == 5
    assert online.student_inputs("focus", user).output("model-a", compute) == 5
    assert (store.outputs_computed, store.outputs_reused) == (3, 2)


def test_old_entries_another_day_or_catalogue_are_not_served(
    refreshed: tuple[MaterialisedInputs, Clock],
) -> None:
    store, clock = refreshed
    online = store.online
    user = sorted(store._entries[("focus", None)])[0]
    stamp = online.stamp("focus", user)
    day, catalogue_at = online.now().date(), online.catalogue.loaded_at
    assert store.lookup("focus", None, user, stamp, day, catalogue_at) is not None
    assert store.lookup("focus", None, user, stamp, day + timedelta(days=1), catalogue_at) is None
    assert store.lookup("focus", None, user, stamp, day, catalogue_at + 1) is None
    clock.now += 301  # past max_age_seconds
    assert store.lookup("focus", None, user, stamp, day, catalogue_at) is None
    # Past half the age: rebuilt a slice per refresh (4 x 300 students x 30 s / 300 s).
    assert store.aged_per_refresh(300) == 120
    assert store.aged_per_refresh(10) == 100  # a batch at least
    report = store.refresh()
    assert report.rebuilt["focus"] == min(report.students, store.aged_per_refresh(report.students))
    while store.refresh().rebuilt["focus"]:
        pass
    assert store.lookup("focus", None, user, stamp, day, catalogue_at) is not None


def test_tracked_students_are_the_requested_then_the_most_active_capped(
    source: Engine,
) -> None:
    store, _ = store_over(source, students=5)
    with source.connect() as conn:
        quiet = str(
            conn.execute(
                text("SELECT user_id FROM tests GROUP BY user_id ORDER BY MAX(started_at) LIMIT 1")
            ).scalar_one()
        )
    assert quiet not in store.tracked()
    assert served(store, "focus", None, quiet) is None  # a miss tracks the student
    tracked = store.tracked()
    assert len(tracked) == 5 and tracked[0] == quiet
    store.refresh()
    assert served(store, "focus", None, quiet) is not None
    assert store.size() == 5 * len(SLOTS)
    with pytest.raises(ValueError, match="unknown kind of input 'grades'"):
        store.want("grades")


def test_an_unknown_student_is_never_materialised(source: Engine) -> None:
    from serving.errors import NotFoundError

    store, _ = store_over(source, students=5)
    for _ in range(2):  # asked for (so tracked), refreshed, asked for again
        with pytest.raises(NotFoundError, match="no student 'nobody'"):
            store.online.focus_inputs("nobody")
        store.refresh()
    assert "nobody" not in store._entries[("focus", None)]
    assert store.size() == 5 * len(SLOTS)


def test_the_background_thread_refreshes_and_stops(source: Engine) -> None:
    store, _ = store_over(source, students=20)
    store.refresh_seconds = 0.05
    store.start()
    try:
        for _ in range(200):
            if store.last_refresh is not None:
                break
            time.sleep(0.05)
        assert store.last_refresh is not None and store.size() == 20 * len(SLOTS)
    finally:
        store.close()
    assert store._thread is None
