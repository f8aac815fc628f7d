"""Model inputs for one request, built from the source database with the same
`features/` builders training uses (so a student gets the features training would give
them at this moment).

Per request only the student's own rows are read; the catalogue (subjects, topics, past
papers, questions) is the same for everyone and is kept in memory, refreshed in the
background after `serving_catalogue_ttl_seconds`. The question ranker's candidates
depend on the catalogue alone (and every student's question ratings), so they are built
once per catalogue refresh, not per request. A refresh first reads the catalogue's stamp
(row count and newest `updated_at` of each shared table and of the ratings, one query):
when it and the day are unchanged, the copy in memory is kept, and with it every cached
or materialised input built on it (a reload would make them all stale at once).

The recommender's topic facts (`recommend.topic_content`: weight, difficulty, paper
frequency, and `mean_rating` over every student's ratings, as in training) depend on the
catalogue and the ratings only, so they too are built once per catalogue refresh; a
request reads none of the ratings table.

Built inputs are cached per student for `PREPIQ_SERVING_FEATURE_CACHE_SECONDS` (default
5; 0 turns it off), keyed by the student, the builder, the day, the catalogue copy and a
stamp of the student's rows (row count and newest `updated_at` of every table the
builder reads, one indexed query): a new or changed row gives a new key, so a cached
input is never older than its rows, only up to those seconds older in its ages
(`days_since_last_attempt` and the like), which is what a request a few seconds earlier
would have got. Building costs 25-55 ms of pandas per request; the stamp query about
0.3 ms.

Before the cache, a request looks in the materialised store (`serving.feature_store`):
the inputs of the most active students, built ahead of requests in batches and rebuilt
when their rows change. The same stamp decides whether its copy still holds."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar, cast

import pandas as pd
from sqlalchemy import Engine, text

from core.database import error_reason
from core.logging import get_logger
from features import focus, progress, questions, recommend
from features.frames import SHARED_TABLES, STUDENT_TABLES, SourceFrames, from_source, read_table
from serving.errors import NotFoundError
from serving.input_entry import Entry, EntryLookup
from serving.source import UNREACHABLE

log = get_logger("prepiq.serving.features")
CACHE_SECONDS_ENV = "PREPIQ_SERVING_FEATURE_CACHE_SECONDS"
DEFAULT_CACHE_SECONDS = 5.0
CACHE_ENTRIES = 4096  # least recently used beyond this are dropped
RATINGS = "question_ratings"
# What a recommendation reads of the student (ratings come in the catalogue's topic facts).
RECOMMEND_STUDENT_TABLES = tuple(t for t in recommend.TABLES if t != RATINGS)
# What the catalogue is built from: the shared tables and every student's ratings.
CATALOGUE_TABLES = (*SHARED_TABLES, RATINGS)
# The tables each kind of per-student input is built from.
INPUT_TABLES = {
    "progress": progress.TABLES,
    "focus": focus.TABLES,
    "recommend": RECOMMEND_STUDENT_TABLES,
}


def cache_seconds_from_env() -> float:
    """The feature cache's lifetime from the environment (0 turns the cache off)."""
    raw = os.environ.get(CACHE_SECONDS_ENV, "").strip()
    return max(0.0, float(raw)) if raw else DEFAULT_CACHE_SECONDS


class InputCache:
    """Built inputs by key, each kept `seconds` at most, least recently used dropped past
    `entries`. Thread-safe; callers get a copy, so a caller's edits never reach the cache."""

    def __init__(self, seconds: float, entries: int = CACHE_ENTRIES) -> None:
        self.seconds = seconds
        self.entries = entries
        self._items: OrderedDict[Hashable, tuple[float, pd.DataFrame]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Hashable, build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        if self.seconds <= 0:
            return build()
        now = time.monotonic()
        with self._lock:
            found = self._items.get(key)
            if found is not None and now - found[0] <= self.seconds:
                self._items.move_to_end(key)
                self.hits += 1
                return found[1].copy()
            self.misses += 1
        built = build()  # outside the lock: other students' requests do not wait
        with self._lock:
            self._items[key] = (now, built.copy())
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        return built


def stamp_query(tables: tuple[str, ...]) -> str:
    """One query giving, per student table of `tables`, its row count and newest
    `updated_at` for the student `:user` (each an indexed lookup)."""
    parts = []
    for name in tables:
        if name not in STUDENT_TABLES:
            continue
        column = "id" if name == "users" else "user_id"
        parts.append(
            f"(SELECT COUNT(*) FROM {name} WHERE {column} = :user), "
            f"(SELECT MAX(updated_at) FROM {name} WHERE {column} = :user)"
        )
    return "SELECT " + ", ".join(parts)


CATALOGUE_STAMP_QUERY = "SELECT " + ", ".join(
    f"(SELECT COUNT(*) FROM {name}), (SELECT MAX(updated_at) FROM {name})"
    for name in CATALOGUE_TABLES
)


def catalogue_stamp(engine: Engine) -> tuple[Any, ...]:
    """Row count and newest `updated_at` of every table the catalogue is built from."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(CATALOGUE_STAMP_QUERY)).one())


Output = TypeVar("Output")


@dataclass(frozen=True)
class StudentInputs:
    """A student's model input: built for this request, or the materialised store's
    entry that holds it (whose rows are copied out only when a model needs them)."""

    built: pd.DataFrame | None = None
    entry: Entry | None = None
    store: EntryLookup | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The input rows (a copy of the entry's, for a stored input)."""
        if self.built is not None:
            return self.built
        assert self.entry is not None
        return self.entry.rows()

    def output(self, key: Hashable, compute: Callable[[pd.DataFrame], Output]) -> Output:
        """`compute(frame)`, kept in the store entry's memo under `key` (the model and
        the request's options): the same input through the same model gives the same
        output, so a repeat request for an unchanged student reuses it. Without an
        entry, computed every time."""
        if self.entry is None or self.store is None:
            return compute(self.frame)
        found: Output | None = self.entry.outputs.get(key)
        if found is None:
            found = self.entry.outputs[key] = compute(self.frame)
            self.store.outputs_computed += 1
        else:
            self.store.outputs_reused += 1
        return found


@dataclass(frozen=True)
class Catalogue:
    """The shared tables, the ranker's candidates per subject, and topic facts."""

    frames: SourceFrames
    topic_content: pd.DataFrame  # `recommend.topic_content` over every student's ratings
    question_candidates: dict[int, pd.DataFrame]
    topics: dict[int, tuple[str, int]]  # topic id -> name, subject id
    loaded_at: float  # when read: this copy's identity in cache keys and store entries
    stamp: tuple[Any, ...]  # `catalogue_stamp` read before the rows
    day: date  # the day `now` fell on (the builders' ages and recency count in days)

    @classmethod
    def read(cls, engine: Engine, now: datetime, stamp: tuple[Any, ...] | None = None) -> Catalogue:
        """The catalogue as of `now`. `stamp`: `catalogue_stamp` when the caller has just
        read it; it is read before the rows, so a write meanwhile makes the copy look
        stale (reloaded once more), never fresh."""
        if stamp is None:
            stamp = catalogue_stamp(engine)
        frames = from_source(engine, "", SHARED_TABLES)
        everyone = SourceFrames({**frames.tables, RATINGS: read_table(engine, RATINGS)})
        history = questions.question_history(everyone, now)
        by_subject = {
            int(subject): history[history["subject_id"] == subject].reset_index(drop=True)
            for subject in history["subject_id"].unique()
        }
        table = frames["topics"]
        topics = {
            int(t): (str(n), int(s))
            for t, n, s in zip(table["id"], table["name"], table["subject_id"], strict=True)
        }
        content = recommend.topic_content(everyone, now)
        return cls(frames, content, by_subject, topics, time.monotonic(), stamp, now.date())


class OnlineFeatures:
    """Builds each model's input for a student (or a subject) from the source."""

    def __init__(
        self,
        engine: Engine,
        catalogue_ttl_seconds: float,
        cache_seconds: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.now: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.ttl = catalogue_ttl_seconds
        self._catalogue: Catalogue | None = None
        self._checked_at = float("-inf")
        self._refreshing = threading.Lock()
        self._loading = threading.Lock()
        self._load_failures = 0  # failed first loads, so that waiters share one attempt
        self._load_error: BaseException | None = None
        try:
            self._load()
        except UNREACHABLE as exc:  # start anyway: not ready, and the first request to
            # find the source back loads it (a restart must not wait for the database)
            log.error("catalogue not loaded: source unreachable", error=error_reason(exc))
        self.cache = InputCache(
            cache_seconds_from_env() if cache_seconds is None else cache_seconds
        )
        self._stamp_queries = {
            kind: text(stamp_query(("users", *tables))) for kind, tables in INPUT_TABLES.items()
        }
        self.materialised: EntryLookup | None = None  # set by the service

    def _load(self) -> Catalogue:
        """Read the catalogue when none is loaded yet. One attempt at a time, and the
        callers that waited for it share its outcome: while the source is down, requests
        arriving together fail together after one connect timeout, not one after another
        after a timeout each."""
        failures = self._load_failures
        with self._loading:
            if self._catalogue is None:
                if self._load_failures != failures and self._load_error is not None:
                    raise self._load_error  # the attempt this call waited for failed
                try:
                    self._catalogue = Catalogue.read(self.engine, self.now())
                except BaseException as exc:
                    self._load_error = exc
                    self._load_failures += 1
                    raise
                self._checked_at = self._catalogue.loaded_at
            return self._catalogue

    @property
    def catalogue(self) -> Catalogue:
        """The cached catalogue; when it was last checked over `ttl` seconds ago, a
        refresh starts in the background and this request uses the current copy (no
        request waits for a reload). Until a first copy is read (the source was down at
        start) the request reads it, and a lost source raises as from any other read."""
        current = self._catalogue
        if current is None:
            return self._load()
        if time.monotonic() - self._checked_at > self.ttl and self._refreshing.acquire(
            blocking=False
        ):
            threading.Thread(target=self._refresh, name="catalogue-refresh", daemon=True).start()
        return current

    def refresh_catalogue(self) -> bool:
        """Reload the catalogue unless its tables and the day are unchanged; True when
        it was reloaded."""
        current = self._catalogue
        if current is None:
            self._load()
            return True
        stamp = catalogue_stamp(self.engine)
        if not (stamp == current.stamp and self.now().date() == current.day):
            self._catalogue = Catalogue.read(self.engine, self.now(), stamp)
        self._checked_at = time.monotonic()
        return self._catalogue is not current

    def _refresh(self) -> None:
        try:
            reloaded = self.refresh_catalogue()
            log.info("catalogue refreshed" if reloaded else "catalogue unchanged")
        except Exception as exc:  # keep serving the old copy; the next request retries
            log.warning("catalogue refresh failed", error=str(exc))
        finally:
            self._refreshing.release()

    def student_rows(self, user_id: str, tables: tuple[str, ...]) -> SourceFrames:
        """The student's rows of `tables` (and their `users` row), catalogue from memory.
        Raises NotFoundError (field user_id) for a student the source does not know."""
        wanted = tuple(dict.fromkeys(("users", *tables)))
        frames = from_source(self.engine, user_id, wanted, self.catalogue.frames)
        if frames["users"].empty:
            raise NotFoundError(f"user_id: no student {user_id!r}", field="user_id")
        return frames

    def stamp(self, kind: str, user_id: str) -> tuple[Any, ...]:
        """The student's stamp for a kind of input: row count and newest `updated_at` of
        every table its builder reads (one indexed query)."""
        with self.engine.connect() as conn:
            return tuple(conn.execute(self._stamp_queries[kind], {"user": user_id}).one())

    def build(
        self, kind: str, user_id: str | list[str], extra: Hashable, catalogue: Catalogue
    ) -> pd.DataFrame:
        """A kind of input for one student or a list of them, built from the source now
        (one read per table and one builder call for the whole list)."""
        tables = INPUT_TABLES[kind]
        if isinstance(user_id, str):
            frames = self.student_rows(user_id, tables)
        else:
            frames = from_source(self.engine, user_id, ("users", *tables), catalogue.frames)
        now = self.now()
        if kind == "progress":
            return progress.daily_sequences(frames, now, int(cast(int, extra)))
        if kind == "focus":
            return focus.topic_test_stats(frames, now)
        return recommend.candidate_topics(frames, now, content=catalogue.topic_content)

    def student_inputs(self, kind: str, user_id: str, extra: Hashable = None) -> StudentInputs:
        """The student's input of `kind`: from the materialised store when it holds it
        for the student's current rows (with the entry's memo of model outputs), else
        from the cache or built now (module doc)."""
        catalogue = self.catalogue
        store = self.materialised
        if store is None and self.cache.seconds <= 0:
            return StudentInputs(self.build(kind, user_id, extra, catalogue))
        stamp = self.stamp(kind, user_id)
        day = self.now().date()
        if store is not None:
            entry = store.lookup(kind, extra, user_id, stamp, day, catalogue.loaded_at)
            if entry is not None:
                return StudentInputs(entry=entry, store=store)
        key = (kind, user_id, extra, day, catalogue.loaded_at, stamp)
        built = self.cache.get_or_build(key, lambda: self.build(kind, user_id, extra, catalogue))
        return StudentInputs(built)

    def _inputs(self, kind: str, user_id: str, extra: Hashable = None) -> pd.DataFrame:
        return self.student_inputs(kind, user_id, extra).frame

    def progress_inputs(self, user_id: str, window_days: int) -> pd.DataFrame:
        """`features.progress.daily_sequences` of the student, ending today."""
        return self._inputs("progress", user_id, window_days)

    def focus_inputs(self, user_id: str) -> pd.DataFrame:
        """`features.focus.topic_test_stats` of the student, as of now."""
        return self._inputs("focus", user_id)

    def recommend_inputs(self, user_id: str) -> pd.DataFrame:
        """`features.recommend.candidate_topics` of the student, as of now, with the topic
        facts of the cached catalogue (over every student's ratings, as training sees them;
        as of the last catalogue refresh)."""
        return self._inputs("recommend", user_id)

    def question_inputs(self, subject_id: int) -> pd.DataFrame:
        """`features.questions.question_history` rows of the subject (cached)."""
        candidates = self.catalogue.question_candidates.get(subject_id)
        if candidates is None:
            raise NotFoundError(f"subject_id: no past papers of subject {subject_id}", "subject_id")
        return candidates

    def completion_history(self, user_id: str, last: int = 30) -> pd.DataFrame:
        """The student's last recorded completion values, oldest first."""
        frames = self.student_rows(user_id, ("user_progress",))
        recorded = frames["user_progress"].sort_values("recorded_on").tail(last)
        return recorded[["recorded_on", "completion_percent"]]

    def topic(self, topic_id: int) -> tuple[str | None, int | None]:
        """A topic's name and subject (None when the catalogue lacks it)."""
        return self.catalogue.topics.get(topic_id, (None, None))
