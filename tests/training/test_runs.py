"""The generic training run's small parts: the `--students` sample, study names that let
other machines join, the direction-aware uplift, and nested reports as MLflow metrics."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.exceptions import ConfigError
from features.snapshot import MANIFEST
from training.focus_area.spec import SPEC
from training.model_spec import TrainingContext, load_frames
from training.runs import flat_metrics, relative_gain, study_name


def _context(snapshot: Path, **changes: object) -> TrainingContext:
    ctx = TrainingContext(
        snapshot_dir=snapshot,
        data_dir=snapshot.parent,
        as_of=datetime(2026, 11, 20, 23, tzinfo=UTC),
        params={"focus_area": {"trials": 3}},
        seed=42,
    )
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def test_students_option_trains_on_a_stable_sample(clean_snapshot: Path) -> None:
    everyone = load_frames(_context(clean_snapshot))
    sample = load_frames(_context(clean_snapshot, students=100))
    users = set(sample["users"]["id"])
    assert 60 < len(users) < 140  # about 100 of the 300, chosen by a hash of the id
    assert users <= set(everyone["users"]["id"])
    assert set(sample["test_answers"]["user_id"]) <= users  # their rows only
    assert len(sample["questions"]) == len(everyone["questions"])  # the catalogue whole
    again = load_frames(_context(clean_snapshot, students=100))
    assert set(again["users"]["id"]) == users


def test_a_shared_study_name_comes_from_content_not_paths(
    clean_snapshot: Path, tmp_path: Path
) -> None:
    # The same snapshot on two machines, at different paths.
    here = shutil.copytree(clean_snapshot, tmp_path / "a" / "raw")
    there = shutil.copytree(clean_snapshot, tmp_path / "elsewhere" / "data" / "raw")
    ctx = _context(here)
    shared = study_name(SPEC, ctx, 12, shared=True)
    assert shared == study_name(SPEC, _context(there), 12, shared=True)  # one study
    assert shared != study_name(SPEC, ctx, 24, shared=True)
    assert shared != study_name(
        SPEC, _context(here, params={"focus_area": {"trials": 4}}), 12, True
    )
    assert shared != study_name(SPEC, _context(here, students=100), 12, shared=True)
    # Other content at the same path: another study.
    manifest = json.loads((there / MANIFEST).read_text())
    manifest["tables"]["users"]["content_hash"] = "0" * 16 + "-1"
    (there / MANIFEST).write_text(json.dumps(manifest))
    assert shared != study_name(SPEC, _context(there), 12, shared=True)
    assert study_name(SPEC, ctx, 12, shared=False).startswith("focus-area-20261120")
    with pytest.raises(ConfigError, match="no snapshot in"):
        study_name(SPEC, _context(tmp_path / "none" / "raw"), 12, shared=True)


def test_uplift_is_positive_when_the_model_is_better_either_way() -> None:
    assert relative_gain(0.9, 0.8, higher_is_better=True) == pytest.approx(0.125)
    assert relative_gain(4.0, 5.0, higher_is_better=False) == pytest.approx(0.2)
    assert relative_gain(6.0, 5.0, higher_is_better=False) == pytest.approx(-0.2)


def test_nested_reports_flatten_to_finite_metrics() -> None:
    report = {"model": {"f1": 0.8, "roc_auc": float("nan")}, "note": "text", "n": 3}
    assert flat_metrics("holdout", report) == {"holdout.model.f1": 0.8, "holdout.n": 3.0}
