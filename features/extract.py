"""Reading contract tables out of the source as Arrow record batches, in bounded chunks.

PostgreSQL (Supabase) streams through `COPY (SELECT ...) TO STDOUT` parsed by Arrow's CSV
reader, which is several times faster than row-by-row fetching and never holds more than
a block in memory. SQLite is read with `fetchmany`. Both give the same Arrow types, taken
from the contract, so a snapshot does not depend on the database it came from.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    SmallInteger,
    Table,
)
from sqlalchemy.sql.type_api import TypeEngine

from core.database import is_postgres
from core.exceptions import SourceDataError
from features.schema import Base

DEFAULT_CHUNK_ROWS = 100_000


def arrow_type(sql_type: TypeEngine[Any]) -> pa.DataType:
    """The Arrow type a contract column is kept as in a snapshot."""
    if isinstance(sql_type, Boolean):
        return pa.bool_()
    if isinstance(sql_type, SmallInteger):
        return pa.int16()
    if isinstance(sql_type, Integer | BigInteger):
        return pa.int64()
    if isinstance(sql_type, Float):
        return pa.float64()
    if isinstance(sql_type, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(sql_type, Date):
        return pa.date32()
    if isinstance(sql_type, JSON):
        return pa.string()  # the JSON text, parsed by whoever needs it
    return pa.string()


@dataclass(frozen=True)
class TableSpec:
    """How one contract table is read: its key, its watermark and its point-in-time column."""

    table: Table

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.table.columns]

    @property
    def keys(self) -> list[str]:
        return [c.name for c in self.table.primary_key.columns]

    @property
    def watermark_column(self) -> str:
        # model_predictions is insert-only: its creation time is its change time.
        return "updated_at" if "updated_at" in self.table.c else "created_at"

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            # All nullable in Arrow: NOT NULL is the contract's to enforce and the gate's to check.
            [pa.field(c.name, arrow_type(c.type)) for c in self.table.columns]
        )


def table_specs() -> list[TableSpec]:
    """Every contract table, parents first."""
    return [TableSpec(t) for t in Base.metadata.sorted_tables]


def table_spec(name: str) -> TableSpec:
    """The spec of one contract table (KeyError naming it when it is not in the contract)."""
    return TableSpec(Base.metadata.tables[name])


def _where(
    spec: TableSpec,
    since: datetime | None,
    as_of: datetime | None,
    postgres: bool,
    equals: dict[str, Any] | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    mark = "%s" if postgres else "?"
    for column, value in (equals or {}).items():
        if column not in spec.table.c:
            raise ValueError(f"table {spec.name} has no column {column}")
        if isinstance(value, list | tuple):  # any of these values (many students' rows)
            clauses.append(f"{column} IN ({', '.join([mark] * len(value))})" if value else "1 = 0")
            params.extend(value)
        else:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if as_of is not None:
        clauses.append(f"created_at <= {mark}")
        params.append(_db_time(as_of, postgres))
    if since is not None:
        clauses.append(f"{spec.watermark_column} > {mark}")
        params.append(_db_time(since, postgres))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _db_time(moment: datetime, postgres: bool) -> Any:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    # SQLite compares the text SQLAlchemy stored: 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return (
        moment
        if postgres
        else moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    )


def stream_table(
    engine: Engine,
    spec: TableSpec,
    *,
    columns: list[str] | None = None,
    since: datetime | None = None,
    as_of: datetime | None = None,
    equals: dict[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Rows of a table as record batches of at most `chunk_rows`, ordered by key.

    `as_of` keeps rows created at or before it (a point-in-time snapshot); `since` keeps
    rows whose watermark column passed it (an incremental read); `equals` keeps rows whose
    columns hold the given values, or any value of a given list (one student's rows, or
    a batch of students', for serving)."""
    wanted = columns or spec.columns
    schema = pa.schema([spec.schema.field(c) for c in wanted])
    postgres = is_postgres(engine)
    where, params = _where(spec, since, as_of, postgres, equals)
    query = f"SELECT {', '.join(wanted)} FROM {spec.name}{where} ORDER BY {', '.join(spec.keys)}"
    raw = engine.raw_connection()
    try:
        if postgres:
            yield from _stream_postgres(raw.driver_connection, query, params, schema, chunk_rows)
        else:
            yield from _stream_sqlite(raw.driver_connection, query, params, schema, chunk_rows)
    except pa.ArrowInvalid as exc:
        raise SourceDataError(f"table {spec.name}: {_unreadable(str(exc), schema)}") from exc
    finally:
        raw.rollback()
        raw.close()


def _unreadable(message: str, schema: pa.Schema) -> str:
    """Arrow's conversion error, with the CSV column number turned into the column name."""
    first_line = message.strip().splitlines()[0]
    found = re.search(r"column #(\d+)", first_line)
    if found and int(found.group(1)) < len(schema):
        first_line = f"column {schema.names[int(found.group(1))]}: {first_line}"
    return first_line


class _CopyReader(io.RawIOBase):
    """A file-like view of a COPY TO STDOUT stream for Arrow's CSV reader."""

    def __init__(self, copy: Any) -> None:
        self._copy = copy
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            block = self._copy.read()
            if not block:
                return 0
            self._pending = memoryview(block)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _stream_postgres(
    conn: Any, query: str, params: list[Any], schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    with conn.cursor() as cursor:
        # Text output of timestamps follows the session zone: make it UTC for this read.
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")
        with cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", params or None) as copy:
            stream = io.BufferedReader(_CopyReader(copy), buffer_size=1 << 20)
            if not stream.peek(1):
                return  # no rows: Arrow refuses an empty CSV
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=8 << 20),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    column_types={f.name: f.type for f in schema},
                    true_values=["t"],
                    false_values=["f"],
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending: list[pa.RecordBatch] = []
            size = 0
            for batch in reader:
                pending.append(batch)
                size += batch.num_rows
                if size >= chunk_rows:
                    yield from _rechunk(pending, schema, chunk_rows)
                    pending, size = [], 0
            if pending:
                yield from _rechunk(pending, schema, chunk_rows)


def _rechunk(
    batches: list[pa.RecordBatch], schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    table = pa.Table.from_batches(batches, schema=schema)
    yield from table.to_batches(max_chunksize=chunk_rows)


def _stream_sqlite(
    conn: Any, query: str, params: list[Any], schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    cursor = conn.cursor()
    try:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_rows):
            columns = list(zip(*rows, strict=True))
            arrays = []
            for values, field in zip(columns, schema, strict=True):
                try:
                    arrays.append(_sqlite_array(list(values), field.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    raise pa.ArrowInvalid(f"column {field.name}: {reason}") from exc
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    finally:
        cursor.close()


def _sqlite_array(values: list[Any], target: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(target):
        # SQLAlchemy stores naive UTC text: parse it as such, fast. Rows other writers
        # stored with an offset ('...+02:00') take the slower path that converts them.
        text = pa.array(values, pa.string())
        try:
            return text.cast(pa.timestamp("us")).cast(target)
        except pa.ArrowInvalid:
            parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
            return pa.array(parsed.dt.as_unit("us"), target)
    if pa.types.is_date32(target):
        return pa.array(values, pa.string()).cast(target)
    if pa.types.is_boolean(target):
        return pa.array([None if v is None else bool(v) for v in values], target)
    return pa.array(values, target)
