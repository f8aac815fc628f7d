"""The bulk writer stores a missing value as NULL on both databases, so the ingest reads
it back as missing (it once wrote a null date as the text 'NaT', which the ingest then
refused: `table users: column exam_date: Failed to parse string: 'NaT'`)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import text

from features.extract import stream_table, table_spec
from features.schema import Base
from synthetic.writer import bulk_loader, to_driver_values
from tests.conftest import migrated_engine

STAMP = np.datetime64("2026-11-01T09:30:00", "us")


def test_missing_dates_and_times_are_null_and_ingest_reads_them(any_url: str) -> None:
    engine = migrated_engine(any_url)
    with bulk_loader(engine) as loader:
        loader.load(
            "users",
            {
                "id": [
                    "00000000-0000-4000-8000-000000000001",
                    "00000000-0000-4000-8000-000000000002",
                ],
                "email": ["a@example.com", "b@example.com"],
                "display_name": ["A", "B"],
                "exam_date": np.array(["2027-06-01", "NaT"], dtype="datetime64[D]"),
                "created_at": np.array([STAMP, STAMP]),
                "updated_at": np.array([STAMP, np.datetime64("NaT")], dtype="datetime64[us]")[
                    :1
                ].repeat(2),
            },
        )
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT exam_date FROM users ORDER BY email")).scalars().all()
    assert [str(v) if v is not None else None for v in stored] == ["2027-06-01", None]

    batches = list(stream_table(engine, table_spec("users")))
    exam_dates = pa.Table.from_batches(batches).column("exam_date").to_pylist()
    assert exam_dates == [date(2027, 6, 1), None]


@pytest.mark.parametrize("postgres", [False, True])
def test_every_kind_of_missing_value_goes_to_the_driver_as_none(postgres: bool) -> None:
    """NaN (an untimed answer), None and pandas' NA in any column, NaT in a time."""
    table = Base.metadata.tables["test_answers"]
    seconds = to_driver_values(np.array([12.5, np.nan]), table.c.time_taken_seconds.type, postgres)
    options = to_driver_values(["A", None], table.c.selected_option.type, postgres)
    flags = to_driver_values(
        np.array([True, pd.NA], dtype=object), table.c.is_correct.type, postgres
    )
    moments = to_driver_values(
        np.array([STAMP, np.datetime64("NaT")]), table.c.answered_at.type, postgres
    )
    assert seconds == [12.5, None]
    assert options == ["A", None]
    assert flags[1] is None
    assert moments[1] is None and moments[0].startswith("2026-11-01")
