"""Per-student model inputs built ahead of requests: the materialised store.

Building one student's inputs on request costs 25-55 ms of pandas, most of a request;
the same builders run over a batch of students cost a small fraction of that per
student. So a background thread keeps built the inputs of up to `students` students (the
recently requested first, then those with the newest tests), and a request for a
student whose rows are unchanged reads them from memory.

Freshness is the feature cache's rule (`serving.online_features`): an entry keeps the
stamp of the rows it was built from (row count and newest `updated_at` of each table the
builder reads), and a request uses it only when the student's stamp now is the same, on
the same day, with the same catalogue copy, and the entry is at most `max_age_seconds`
old (ages such as `days_since_last_attempt` move with the clock: 15 minutes by default,
0.01 of a day). Otherwise the request builds the input itself, as without the store, and
the next refresh rebuilds the entry. A refresh reads every tracked student's stamps with
one grouped query per table (read before the rows, so a write in between only makes the
entry look stale), then rebuilds, a batch at a time, the entries that are missing or
changed, and a slice of those past half their age.

The entries of a batch share its frame (each is a row range of it), so the store holds
the batch frames and one small record per student."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, text

from core.logging import get_logger
from features.frames import STUDENT_TABLES
from serving import metrics
from serving.input_entry import Entry
from serving.online_features import INPUT_TABLES, OnlineFeatures

log = get_logger("prepiq.serving.feature_store")
BATCH_STUDENTS = 100  # students per builder call: small enough to let requests interleave
ID_CHUNK = 500  # students per IN (...) list of the stamp queries
Slot = tuple[str, Hashable]  # (kind of input, builder argument such as the window length)


@dataclass
class RefreshReport:
    """What one refresh did."""

    students: int
    rebuilt: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def stamp_tables(kind: str) -> list[str]:
    """The tables of a kind's stamp, in `online_features.stamp_query`'s order."""
    return [name for name in ("users", *INPUT_TABLES[kind]) if name in STUDENT_TABLES]


def row_ranges(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """The frame with each student's rows together (their order kept), and each
    student's row range in it."""
    users = frame["user_id"].to_numpy()
    order = np.argsort(users, kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        frame = frame.iloc[order].reset_index(drop=True)
        users = users[order]
    ranges: dict[str, tuple[int, int]] = {}
    if len(users):
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        stops = np.r_[starts[1:], len(users)]
        ranges = {str(users[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
    return frame, ranges


class MaterialisedInputs:
    """The store (module doc). `lookup` is called on the request path; `refresh` by the
    background thread (`start`/`close`) or a caller that wants it now."""

    def __init__(
        self,
        online: OnlineFeatures,
        students: int,
        refresh_seconds: float,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.online = online
        self.students = students
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._entries: dict[Slot, dict[str, Entry]] = {}
        self._slots: dict[Slot, None] = {}  # what to build (kinds seen, in order)
        self._requested: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hits = 0
        self.misses = 0
        self.outputs_computed = 0  # model outputs put in an entry's memo
        self.outputs_reused = 0  # requests answered from an entry's memo
        self.last_refresh: RefreshReport | None = None

    def want(self, kind: str, extra: Hashable = None) -> None:
        """Build this kind of input (with this builder argument) from the next refresh."""
        if kind not in INPUT_TABLES:
            raise ValueError(f"unknown kind of input {kind!r}")
        self._slots.setdefault((kind, extra), None)

    def lookup(
        self,
        kind: str,
        extra: Hashable,
        user_id: str,
        stamp: tuple[Any, ...],
        day: date,
        catalogue_at: float,
    ) -> Entry | None:
        """The student's entry if the store holds it for these rows, day and catalogue,
        and it is young enough; else None (and the student is tracked, if the source
        knows them: the stamp starts with their `users` row count)."""
        self.want(kind, extra)
        if stamp and stamp[0]:  # an unknown id takes no one's place
            with self._lock:
                self._requested[user_id] = None
                self._requested.move_to_end(user_id)
                while len(self._requested) > self.students:
                    self._requested.popitem(last=False)
        entry = self._entries.get((kind, extra), {}).get(user_id)
        if (
            entry is None
            or entry.stamp != stamp
            or entry.day != day
            or entry.catalogue_at != catalogue_at
            or self.clock() - entry.built_at > self.max_age_seconds
        ):
            self.misses += 1
            metrics.record_lookup(kind, hit=False)
            return None
        self.hits += 1
        metrics.record_lookup(kind, hit=True)
        return entry

    def size(self) -> int:
        """Entries held, over every kind."""
        return sum(len(entries) for entries in self._entries.values())

    # -- refresh ---------------------------------------------------------------------------

    def tracked(self) -> list[str]:
        """The students to keep built: the recently requested (newest first), then those
        with the newest tests, `students` at most."""
        with self._lock:
            wanted = list(reversed(self._requested))
        query = text(
            "SELECT user_id FROM tests GROUP BY user_id ORDER BY MAX(started_at) DESC LIMIT :n"
        )
        with self.online.engine.connect() as conn:
            active = [str(row[0]) for row in conn.execute(query, {"n": self.students})]
        return list(dict.fromkeys([*wanted, *active]))[: self.students]

    def table_stamps(
        self, users: list[str], tables: set[str]
    ) -> dict[str, dict[str, tuple[Any, Any]]]:
        """Per table, each student's (row count, newest `updated_at`): what the stamp
        query gives one student, for many in one grouped query per table."""
        found: dict[str, dict[str, tuple[Any, Any]]] = {}
        with self.online.engine.connect() as conn:
            for name in sorted(tables):
                column = "id" if name == "users" else "user_id"
                query = text(
                    f"SELECT {column}, COUNT(*), MAX(updated_at) FROM {name} "
                    f"WHERE {column} IN :users GROUP BY {column}"
                ).bindparams(bindparam("users", expanding=True))
                per_user: dict[str, tuple[Any, Any]] = {}
                for part in chunks(users, ID_CHUNK):
                    for user, count, newest in conn.execute(query, {"users": part}):
                        per_user[str(user)] = (count, newest)
                found[name] = per_user
        return found

    def aged_per_refresh(self, students: int) -> int:
        """How many unchanged entries past half their age one refresh rebuilds."""
        share = 4 * students * self.refresh_seconds / self.max_age_seconds
        return max(BATCH_STUDENTS, math.ceil(share))

    def refresh(self) -> RefreshReport:
        """Rebuild the entries that are missing, changed or past half their age, and drop
        those of students no longer tracked."""
        started = time.perf_counter()
        catalogue = self.online.catalogue
        users = self.tracked()
        slots = list(self._slots)
        tables = {name for kind, _ in slots for name in stamp_tables(kind)}
        per_table = self.table_stamps(users, tables | {"users"})
        # Only students the source knows: an unknown id must keep getting its 404.
        users = [user for user in users if user in per_table["users"]]
        day = self.online.now().date()
        report = RefreshReport(students=len(users))
        for slot in slots:
            kind, extra = slot
            names = stamp_tables(kind)
            stamps = {
                user: tuple(v for name in names for v in per_table[name].get(user, (0, None)))
                for user in users
            }
            current = self._entries.get(slot, {})
            stale, aged = [], []
            for user in users:
                entry = current.get(user)
                if (
                    entry is None
                    or entry.stamp != stamps[user]
                    or entry.day != day
                    or entry.catalogue_at != catalogue.loaded_at
                ):
                    stale.append(user)
                elif self.clock() - entry.built_at > self.max_age_seconds / 2:
                    aged.append(user)
            # Unchanged entries past half their age are rebuilt oldest first, a slice per
            # refresh (all of them within a quarter of their age), not in one burst that
            # would hold the interpreter from requests for seconds.
            aged.sort(key=lambda user: current[user].built_at)
            stale += aged[: self.aged_per_refresh(len(users))]
            for batch in chunks(stale, BATCH_STUDENTS):
                built_at = self.clock()
                frame, ranges = row_ranges(
                    self.online.build(kind, batch, extra, catalogue).reset_index(drop=True)
                )
                fresh = {
                    user: Entry(
                        stamps[user],
                        day,
                        catalogue.loaded_at,
                        built_at,
                        frame,
                        *ranges.get(user, (0, 0)),  # no rows: an empty input
                    )
                    for user in batch
                }
                with self._lock:
                    self._entries[slot] = {**self._entries.get(slot, {}), **fresh}
            report.rebuilt[f"{kind}" if extra is None else f"{kind}:{extra}"] = len(stale)
            keep = set(users)
            with self._lock:
                self._entries[slot] = {
                    user: entry
                    for user, entry in self._entries.get(slot, {}).items()
                    if user in keep
                }
        report.seconds = round(time.perf_counter() - started, 3)
        self.last_refresh = report
        return report

    def start(self) -> None:
        """Refresh now and then every `refresh_seconds`, in a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="feature-store", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.refresh()
                if any(report.rebuilt.values()):
                    log.info(
                        "materialised inputs refreshed",
                        students=report.students,
                        rebuilt=report.rebuilt,
                        seconds=report.seconds,
                    )
            except Exception as exc:  # requests build their own inputs meanwhile
                log.warning("materialised inputs refresh failed", error=str(exc))
            self._stop.wait(self.refresh_seconds)

    def close(self) -> None:
        """Stop the refresh thread (waiting for a refresh in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
