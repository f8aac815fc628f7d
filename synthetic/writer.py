"""Fast bulk loading of column arrays into contract tables, in one transaction.

PostgreSQL gets COPY (psycopg 3); SQLite gets `executemany` on the raw connection with
values already in the text form SQLAlchemy itself stores, so the ORM reads them back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Boolean, Date, DateTime, Engine, Table
from sqlalchemy.sql.type_api import TypeEngine

from core.database import is_postgres
from features.schema import Base

Column = np.ndarray | Sequence[Any]
SQLITE_CACHE_KIB = 512 * 1024


def _with_nulls(text: np.ndarray, missing: np.ndarray) -> list[Any]:
    """The values as a list, None where `missing`: numpy spells a missing time as the
    text 'NaT', which a database would store (SQLite) or refuse (PostgreSQL)."""
    if not missing.any():
        return list(text.tolist())
    out = text.astype(object)
    out[missing] = None
    return list(out.tolist())


def to_driver_values(values: Column, sql_type: TypeEngine[Any], postgres: bool) -> list[Any]:
    """Convert one column to the Python values the driver takes; a missing value (NaT,
    NaN, None, pandas' NA) becomes None, which both drivers write as NULL."""
    if isinstance(sql_type, DateTime):
        moments = np.asarray(values, dtype="datetime64[us]")
        text = np.datetime_as_string(moments, unit="us")
        text = np.char.add(text, "+00:00") if postgres else np.char.replace(text, "T", " ")
        return _with_nulls(text, np.isnat(moments))
    if isinstance(sql_type, Date):
        days = np.asarray(values, dtype="datetime64[D]")
        return _with_nulls(np.datetime_as_string(days), np.isnat(days))
    if isinstance(sql_type, JSON):
        return [json.dumps(v) for v in values]
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    # Only floats and objects can hold a missing value (NaN, None, pandas' NA).
    if array.dtype.kind in "fO":
        converted = _with_nulls(array, np.asarray(pd.isna(array)))
    else:
        converted = array.tolist()
    if isinstance(sql_type, Boolean) and not postgres:
        return [None if v is None else int(v) for v in converted]
    return converted


class BulkLoader:
    """Loads whole columns into tables through one DBAPI connection and transaction."""

    def __init__(self, dbapi_connection: Any, postgres: bool) -> None:
        self._conn = dbapi_connection
        self._postgres = postgres
        self.rows_written: dict[str, int] = {}

    def load(self, table_name: str, columns: Mapping[str, Any]) -> int:
        """Insert the rows given column by column; returns how many."""
        table: Table = Base.metadata.tables[table_name]
        names = list(columns)
        values = [to_driver_values(columns[n], table.c[n].type, self._postgres) for n in names]
        n_rows = len(values[0]) if values else 0
        if n_rows == 0:
            return 0
        cursor = self._conn.cursor()
        try:
            if self._postgres:
                statement = f"COPY {table_name} ({', '.join(names)}) FROM STDIN"
                with cursor.copy(statement) as copy:
                    for row in zip(*values, strict=True):
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in names)
                cursor.executemany(
                    f"INSERT INTO {table_name} ({', '.join(names)}) VALUES ({marks})",
                    zip(*values, strict=True),
                )
        finally:
            cursor.close()
        self.rows_written[table_name] = self.rows_written.get(table_name, 0) + n_rows
        return n_rows

    def clear(self, tables: Sequence[str]) -> None:
        """Delete every row of `tables` (children first) inside the loader's transaction."""
        cursor = self._conn.cursor()
        try:
            for name in tables:
                cursor.execute(f"DELETE FROM {name}")
        finally:
            cursor.close()

    def reset_sequences(self, tables: Sequence[str]) -> None:
        """After loading explicit ids, move PostgreSQL identity sequences past them."""
        if not self._postgres:
            return
        cursor = self._conn.cursor()
        try:
            for name in tables:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
                )
        finally:
            cursor.close()


@contextmanager
def bulk_loader(engine: Engine) -> Iterator[BulkLoader]:
    """A loader whose rows are committed together at the end, or not at all."""
    raw = engine.raw_connection()
    try:
        postgres = is_postgres(engine)
        if not postgres:
            sqlite = raw.driver_connection
            # A big page cache keeps the indexes' B-trees in memory while millions of rows
            # with random user ids go in; SQLite's default (2 MB) makes loads superlinear.
            sqlite.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # type: ignore[union-attr]
            # One all-or-nothing transaction of millions of rows would grow the WAL to the
            # size of the data; a rollback journal only keeps the pages that existed before.
            sqlite.execute("PRAGMA journal_mode=DELETE")  # type: ignore[union-attr]
            sqlite.execute("BEGIN")  # type: ignore[union-attr]
        loader = BulkLoader(raw.driver_connection, postgres)
        yield loader
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        if not is_postgres(engine):
            raw.driver_connection.execute("PRAGMA journal_mode=WAL")  # type: ignore[union-attr]
        raw.close()
