"""Model inputs for one request, built from the source database with the same
`features/` builders training uses (so a student gets the features training would give
them at this moment).

Per request only the student's own rows are read; the catalogue (subjects, topics, past
papers, questions) is the same for everyone and is kept in memory, refreshed in the
background after `serving_catalogue_ttl_seconds`. The question ranker's candidates
depend on the catalogue alone (and every student's question ratings), so they are built
once per catalogue refresh, not per request."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Engine

from core.logging import get_logger
from features import focus, progress, questions, recommend
from features.frames import SHARED_TABLES, SourceFrames, from_source, read_table
from serving.errors import NotFoundError

log = get_logger("prepiq.serving.features")


@dataclass(frozen=True)
class Catalogue:
    """The shared tables, the ranker's candidates per subject, and topic facts."""

    frames: SourceFrames
    question_candidates: dict[int, pd.DataFrame]
    topics: dict[int, tuple[str, int]]  # topic id -> name, subject id
    loaded_at: float

    @classmethod
    def read(cls, engine: Engine) -> Catalogue:
        frames = from_source(engine, "", SHARED_TABLES)
        everyone = SourceFrames(
            {**frames.tables, "question_ratings": read_table(engine, "question_ratings")}
        )
        history = questions.question_history(everyone, datetime.now(UTC))
        by_subject = {
            int(subject): history[history["subject_id"] == subject].reset_index(drop=True)
            for subject in history["subject_id"].unique()
        }
        table = frames["topics"]
        topics = {
            int(t): (str(n), int(s))
            for t, n, s in zip(table["id"], table["name"], table["subject_id"], strict=True)
        }
        return cls(frames, by_subject, topics, time.monotonic())


class OnlineFeatures:
    """Builds each model's input for a student (or a subject) from the source."""

    def __init__(self, engine: Engine, catalogue_ttl_seconds: float) -> None:
        self.engine = engine
        self.ttl = catalogue_ttl_seconds
        self._catalogue = Catalogue.read(engine)
        self._refreshing = threading.Lock()

    @property
    def catalogue(self) -> Catalogue:
        """The cached catalogue; when stale, a refresh starts in the background and this
        request uses the current copy (no request waits for a reload)."""
        current = self._catalogue
        if time.monotonic() - current.loaded_at > self.ttl and self._refreshing.acquire(
            blocking=False
        ):
            threading.Thread(target=self._refresh, name="catalogue-refresh", daemon=True).start()
        return current

    def _refresh(self) -> None:
        try:
            self._catalogue = Catalogue.read(self.engine)
            log.info("catalogue refreshed")
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

    def progress_inputs(self, user_id: str, window_days: int) -> pd.DataFrame:
        """`features.progress.daily_sequences` of the student, ending today."""
        frames = self.student_rows(user_id, progress.TABLES)
        return progress.daily_sequences(frames, datetime.now(UTC), window_days)

    def focus_inputs(self, user_id: str) -> pd.DataFrame:
        """`features.focus.topic_test_stats` of the student, as of now."""
        frames = self.student_rows(user_id, focus.TABLES)
        return focus.topic_test_stats(frames, datetime.now(UTC))

    def recommend_inputs(self, user_id: str) -> pd.DataFrame:
        """`features.recommend.candidate_topics` of the student, as of now."""
        frames = self.student_rows(user_id, recommend.TABLES)
        return recommend.candidate_topics(frames, datetime.now(UTC))

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
