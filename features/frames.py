"""The tables feature builders read, from either side of the platform:

- offline (training): every student's rows, from a snapshot under `data/raw/`;
- online (serving): one student's rows, read from the source database on request.

Both give DataFrames with the same columns and dtypes (the snapshot's Arrow schema), and
both are cut at a point in time by `as_of()`, so a builder computes the same features for
a student whichever side called it, and never sees rows stamped after `as_of`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from features.extract import stream_table, table_spec

# The column that places a row in time. A row exists "as of t" when this is <= t.
EVENT_TIME: dict[str, str] = {
    "users": "created_at",
    "user_subjects": "enrolled_at",
    "user_preferences": "created_at",
    "past_papers": "exam_date",
    "tests": "started_at",  # a test exists once started; its answers follow
    "test_answers": "answered_at",
    "study_activity": "activity_date",
    "user_progress": "recorded_on",
    "question_ratings": "created_at",
    "model_predictions": "created_at",
}
# Catalogue tables: the same for every student, read whole.
SHARED_TABLES = ("subjects", "topics", "past_papers", "questions")
# Per-student tables: filtered by user on the online side (users by its id).
STUDENT_TABLES = (
    "users",
    "user_subjects",
    "user_preferences",
    "tests",
    "test_answers",
    "study_activity",
    "user_progress",
    "question_ratings",
)


@dataclass
class SourceFrames:
    """Contract tables as DataFrames, keyed by table name."""

    tables: dict[str, pd.DataFrame]

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def as_of(self, moment: datetime) -> SourceFrames:
        """Only the rows that existed at `moment` (questions: of papers already sat)."""
        cut: dict[str, pd.DataFrame] = {}
        for name, frame in self.tables.items():
            column = EVENT_TIME.get(name)
            if column is None or frame.empty:
                cut[name] = frame
                continue
            values = frame[column]
            if pd.api.types.is_datetime64_any_dtype(values):
                keep = values <= pd.Timestamp(moment)
            else:  # dates
                keep = values <= moment.date()
            cut[name] = frame.loc[keep.to_numpy()].reset_index(drop=True)
        if "questions" in cut and "past_papers" in cut:
            # A paper's questions once it was sat; a question written for the app (no
            # paper) is there all along.
            sat = set(cut["past_papers"]["id"])
            paper = cut["questions"]["paper_id"]
            cut["questions"] = cut["questions"][paper.isna() | paper.isin(sat)].reset_index(
                drop=True
            )
        return SourceFrames(cut)

    def for_users(self, user_ids: Iterable[str]) -> SourceFrames:
        """Only these students' rows (shared tables whole)."""
        wanted = set(user_ids)
        picked = {}
        for name, frame in self.tables.items():
            column = "id" if name == "users" else "user_id"
            if name in STUDENT_TABLES and column in frame:
                picked[name] = frame[frame[column].isin(wanted)].reset_index(drop=True)
            else:
                picked[name] = frame
        return SourceFrames(picked)


def from_snapshot(snapshot_dir: Path, tables: Iterable[str]) -> SourceFrames:
    """Offline: whole tables of a snapshot."""
    return SourceFrames(
        {name: pq.read_table(snapshot_dir / f"{name}.parquet").to_pandas() for name in tables}
    )


def from_source(
    engine: Engine,
    user_id: str | list[str],
    tables: Iterable[str],
    shared: SourceFrames | None = None,
) -> SourceFrames:
    """Online: one student's rows (or a list of students') straight from the source
    (shared tables from `shared` when the caller keeps them in memory, else read whole)."""
    frames: dict[str, pd.DataFrame] = {}
    for name in tables:
        if name in SHARED_TABLES and shared is not None and name in shared.tables:
            frames[name] = shared[name]
            continue
        equals = None
        if name in STUDENT_TABLES:
            equals = {"id" if name == "users" else "user_id": user_id}
        frames[name] = read_table(engine, name, equals)
    return SourceFrames(frames)


def read_table(engine: Engine, name: str, equals: dict[str, Any] | None = None) -> pd.DataFrame:
    """One contract table from the source (rows matching `equals`, else whole), with the
    snapshot's column types."""
    spec = table_spec(name)
    batches = list(stream_table(engine, spec, equals=equals))
    return pa.Table.from_batches(batches, schema=spec.schema).to_pandas()
