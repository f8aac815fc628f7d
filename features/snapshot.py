"""Point-in-time snapshots of the source: one Parquet file per contract table under
`data/raw/`, with a manifest (row counts, watermark per table, source URL without
credentials, schema hash, content hash).

A new snapshot is built in a staging folder next to the current one and switched in at
the end, so a failed ingest leaves the previous snapshot as it was. Incremental ingests
read only rows whose watermark column passed the last watermark, replace those rows by
key, and drop rows whose key no longer exists in the source (deletes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, inspect

from core.security import redact_url
from features.extract import DEFAULT_CHUNK_ROWS, TableSpec, stream_table, table_specs

MANIFEST = "manifest.json"
RAW_DIR = "raw"
REJECTED_DIR = ".raw.rejected"  # the last snapshot the gate refused, kept for inspection
# Rows committed a little after the watermark was taken can carry an older updated_at
# (long transactions): the watermark never moves past "ingest start minus this".
WATERMARK_SAFETY = timedelta(minutes=5)


@dataclass
class TableSnapshot:
    """One table of a snapshot."""

    rows: int
    watermark: str | None
    content_hash: str
    file: str
    mode: str  # "full" or "incremental"
    rows_read: int
    rows_deleted: int = 0


@dataclass
class SnapshotManifest:
    """What a snapshot holds and where it came from."""

    created_at: str
    as_of: str
    source: str
    schema_hash: str
    tables: dict[str, TableSnapshot] = field(default_factory=dict)
    previous_rows: dict[str, int] = field(default_factory=dict)  # for the gate's volume check
    seconds: float = 0.0

    @property
    def content_hash(self) -> str:
        """One hash over every table's content hash."""
        digest = hashlib.sha256()
        for name in sorted(self.tables):
            digest.update(f"{name}:{self.tables[name].content_hash};".encode())
        return digest.hexdigest()

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"content_hash": self.content_hash}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SnapshotManifest:
        data = json.loads(text)
        data.pop("content_hash", None)
        tables = {k: TableSnapshot(**v) for k, v in data.pop("tables").items()}
        return cls(**data, tables=tables)


def read_manifest(snapshot_dir: Path) -> SnapshotManifest | None:
    """The manifest of the snapshot in `snapshot_dir`, or None when there is none."""
    path = snapshot_dir / MANIFEST
    return SnapshotManifest.from_json(path.read_text()) if path.exists() else None


def schema_hash(engine: Engine) -> str:
    """Fingerprint of the source's contract tables as the database describes them."""
    inspector = inspect(engine)
    parts = []
    for spec in table_specs():
        columns = inspector.get_columns(spec.name)
        parts.append(spec.name + ":" + ",".join(f"{c['name']} {c['type']}" for c in columns))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class ContentHasher:
    """Order-independent hash of a table's rows: the same rows give the same hash however
    they were read (full or incremental, any order)."""

    def __init__(self) -> None:
        self._sum = np.uint64(0)
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        hashes = pd.util.hash_pandas_object(batch.to_pandas(), index=False).to_numpy()
        with np.errstate(over="ignore"):
            self._sum = self._sum + hashes.sum(dtype=np.uint64)
        self._rows += batch.num_rows

    @property
    def value(self) -> str:
        return f"{int(self._sum):016x}-{self._rows}"


def _key_array(batch: pa.RecordBatch | pa.Table, keys: list[str]) -> pa.Array:
    if len(keys) == 1:
        column = batch.column(keys[0])
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    parts = [pc.cast(batch.column(k), pa.string()) for k in keys]
    joined = pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _max_time(batch: pa.RecordBatch, column: str, current: datetime | None) -> datetime | None:
    value = pc.max(batch.column(column)).as_py()
    if value is None:
        return current
    return value if current is None or value > current else current


class _TableWriter:
    """Writes record batches of one table to Parquet while hashing them."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.hasher = ContentHasher()
        self.rows = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.hasher.add(batch)
            self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()


def ingest_table(
    engine: Engine,
    spec: TableSpec,
    staging: Path,
    previous_dir: Path | None,
    previous: TableSnapshot | None,
    *,
    as_of: datetime,
    started: datetime,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> TableSnapshot:
    """Write one table of the new snapshot into `staging`: a full read when there is no
    usable previous snapshot, otherwise the previous file merged with the rows changed
    since its watermark."""
    path = staging / f"{spec.name}.parquet"
    writer = _TableWriter(path, spec.schema)
    watermark: datetime | None = None
    try:
        if previous is None or previous_dir is None or previous.watermark is None:
            rows_read = 0
            for batch in stream_table(engine, spec, as_of=as_of, chunk_rows=chunk_rows):
                writer.write(batch)
                rows_read += batch.num_rows
                watermark = _max_time(batch, spec.watermark_column, watermark)
            mode, deleted = "full", 0
        else:
            since = datetime.fromisoformat(previous.watermark)
            watermark = since
            changed_path = staging / f".{spec.name}.changed.parquet"
            changed = _TableWriter(changed_path, spec.schema)
            changed_keys: list[pa.Array] = []
            for batch in stream_table(
                engine, spec, since=since, as_of=as_of, chunk_rows=chunk_rows
            ):
                changed.write(batch)
                changed_keys.append(_key_array(batch, spec.keys))
                watermark = _max_time(batch, spec.watermark_column, watermark)
            changed.close()
            rows_read = changed.rows
            # Every key the source still has: rows missing from it were deleted.
            live = [
                _key_array(batch, spec.keys)
                for batch in stream_table(
                    engine, spec, columns=spec.keys, as_of=as_of, chunk_rows=chunk_rows
                )
            ]
            live_keys = (
                pa.concat_arrays(live)
                if live
                else pa.array([], spec.schema.field(spec.keys[0]).type)
            )
            replaced = pa.concat_arrays(changed_keys) if changed_keys else live_keys.slice(0, 0)
            deleted = 0
            old = pq.ParquetFile(previous_dir / previous.file)
            for batch in old.iter_batches(batch_size=chunk_rows):
                keys = _key_array(batch, spec.keys)
                alive = pc.is_in(keys, value_set=live_keys)
                keep = pc.and_(alive, pc.invert(pc.is_in(keys, value_set=replaced)))
                deleted += batch.num_rows - pc.sum(alive.cast(pa.int64())).as_py()
                writer.write(batch.filter(keep))
            for batch in pq.ParquetFile(changed_path).iter_batches(batch_size=chunk_rows):
                writer.write(batch)
            changed_path.unlink()
            mode = "incremental"
    finally:
        writer.close()
    # Rows stamped in the last few minutes are read again next time (late commits).
    ceiling = started - WATERMARK_SAFETY
    if watermark is not None and watermark > ceiling:
        watermark = ceiling
    return TableSnapshot(
        rows=writer.rows,
        watermark=watermark.isoformat() if watermark else None,
        content_hash=writer.hasher.value,
        file=path.name,
        mode=mode,
        rows_read=rows_read,
        rows_deleted=deleted,
    )


def staging_dir(data_dir: Path) -> Path:
    """A fresh folder to build the next snapshot in, beside the current one."""
    path = data_dir / f".{RAW_DIR}.staging-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def recover(data_dir: Path) -> None:
    """Finish or undo a switch interrupted by a crash, and drop abandoned staging folders."""
    current, retired = data_dir / RAW_DIR, data_dir / f".{RAW_DIR}.retired"
    if not current.exists() and retired.exists():
        retired.rename(current)
    shutil.rmtree(retired, ignore_errors=True)
    for leftover in data_dir.glob(f".{RAW_DIR}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def write_manifest(staging: Path, manifest: SnapshotManifest) -> None:
    """Write the manifest into a (staging) snapshot folder."""
    (staging / MANIFEST).write_text(manifest.to_json())


def reject(staging: Path, data_dir: Path) -> Path:
    """Keep a snapshot that failed the gate aside for inspection (replacing the last one)."""
    rejected = data_dir / REJECTED_DIR
    shutil.rmtree(rejected, ignore_errors=True)
    staging.rename(rejected)
    return rejected


def publish(staging: Path, manifest: SnapshotManifest, data_dir: Path) -> Path:
    """Write the manifest and switch the staging folder in as `data/raw`."""
    write_manifest(staging, manifest)
    current, retired = data_dir / RAW_DIR, data_dir / f".{RAW_DIR}.retired"
    if current.exists():
        current.rename(retired)
    staging.rename(current)
    shutil.rmtree(retired, ignore_errors=True)
    return current


def new_manifest(engine: Engine, as_of: datetime) -> SnapshotManifest:
    """An empty manifest for a snapshot of `engine` as of `as_of`."""
    return SnapshotManifest(
        created_at=datetime.now(UTC).isoformat(),
        as_of=as_of.isoformat(),
        source=redact_url(engine.url.render_as_string(hide_password=False)),
        schema_hash=schema_hash(engine),
    )


def usable_previous(
    previous: SnapshotManifest | None, manifest: SnapshotManifest, full: bool
) -> SnapshotManifest | None:
    """The previous snapshot when an incremental ingest may build on it: same source, same
    schema, and not newer than the requested point in time."""
    if full or previous is None:
        return None
    if previous.source != manifest.source or previous.schema_hash != manifest.schema_hash:
        return None
    if datetime.fromisoformat(previous.as_of) > datetime.fromisoformat(manifest.as_of):
        return None
    return previous
