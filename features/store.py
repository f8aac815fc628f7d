"""Feature tables written next to the snapshot (`data/features/`), each with its own
content hash in a manifest, built by the same builders that serving calls online."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features import focus, progress, questions, recommend
from features.frames import SourceFrames, from_snapshot
from features.snapshot import ContentHasher, read_manifest

FEATURES_DIR = "features"
Builder = Callable[[SourceFrames, datetime], pd.DataFrame]
# Feature table name -> (builder, the model that uses it).
BUILDERS: dict[str, tuple[Builder, str]] = {
    "progress_sequences": (progress.daily_sequences, "progress forecaster"),
    "topic_test_stats": (focus.topic_test_stats, "focus-area identifier"),
    "topic_interactions": (recommend.interactions, "topic recommender"),
    "topic_content": (recommend.topic_content, "topic recommender"),
    "student_topic_context": (recommend.student_context, "topic recommender"),
    "topic_candidates": (recommend.candidate_topics, "topic recommender"),
    "question_history": (questions.question_history, "question ranker"),
}
TABLES = sorted(
    set(progress.TABLES) | set(focus.TABLES) | set(recommend.TABLES) | set(questions.TABLES)
)


def frame_hash(frame: pd.DataFrame) -> str:
    """Order-independent hash of a feature table's rows."""
    hasher = ContentHasher()
    for batch in pa.Table.from_pandas(frame, preserve_index=False).to_batches():
        hasher.add(batch)
    return hasher.value


def build_feature_tables(
    snapshot_dir: Path, out_dir: Path, as_of: datetime | None = None
) -> dict[str, object]:
    """Build every feature table from the snapshot as of `as_of` (default: the snapshot's
    own point in time) and write them with a manifest; returns the manifest."""
    snapshot = read_manifest(snapshot_dir)
    moment = as_of or (datetime.fromisoformat(snapshot.as_of) if snapshot else datetime.now(UTC))
    frames = from_snapshot(snapshot_dir, TABLES)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, object] = {}
    for name, (builder, model) in BUILDERS.items():
        table = builder(frames, moment)
        path = out_dir / f"{name}.parquet"
        table.to_parquet(path, index=False)
        entries[name] = {
            "rows": len(table),
            "content_hash": frame_hash(table),
            "model": model,
            "file": path.name,
        }
    manifest: dict[str, object] = {
        "as_of": moment.isoformat(),
        "snapshot_content_hash": snapshot.content_hash if snapshot else None,
        "tables": entries,
    }
    manifest["content_hash"] = hashlib.sha256(
        json.dumps(entries, sort_keys=True).encode()
    ).hexdigest()
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
