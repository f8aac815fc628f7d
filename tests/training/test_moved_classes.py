"""Pickles made before the model packages existed name their classes `training.<model>.<Name>`:
a registered version's pyfunc and a frozen hold-out's dataset. Each package forwards
exactly those names to the module where the class lives now."""

from __future__ import annotations

import json
import pickle
from datetime import datetime
from importlib import import_module
from pathlib import Path

import joblib  # type: ignore[import-untyped]
import pandas as pd
import pytest

from registry import holdout
from training.catalog import PACKAGES
from training.focus_area.data import FocusAreaData

# What the flat modules (a051bcf) defined that a pickle of a registered version or a
# frozen hold-out can name: every pyfunc class and the classes its state holds, and every
# prepared dataset.
PICKLED_BEFORE_THE_SPLIT = {
    "training.focus_area": {"FocusAreaPyfunc", "FocusAreaData"},
    "training.progress_forecaster": {
        "ProgressForecasterPyfunc",
        "Forecaster",
        "ForecastNet",
        "InputScaler",
        "ForecastData",
        "Examples",
    },
    "training.topic_recommender": {
        "TopicRecommenderPyfunc",
        "HybridRecommender",
        "CollaborativeFilter",
        "TwoStageScorer",
        "MasteryRule",
        "RecommenderData",
    },
    "training.question_ranker": {"QuestionRankerPyfunc", "FittedRanker", "RankerData", "CutOff"},
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_class_an_old_pickle_names_resolves_to_where_it_lives(package: str) -> None:
    moved = import_module(package).MOVED
    assert set(moved) == PICKLED_BEFORE_THE_SPLIT[package]
    for name, module in moved.items():
        # An old pickle's GLOBAL opcode: `c<module>\n<name>\n`, then STOP.
        found = pickle.loads(f"c{package}\n{name}\n.".encode())
        assert found is getattr(import_module(f"{package}.{module}"), name)
        assert found.__module__ == f"{package}.{module}"
    with pytest.raises(AttributeError, match="'SPEC'"):
        pickle.loads(f"c{package}\nSPEC\n.".encode())


def test_a_holdout_frozen_before_the_split_still_loads(tmp_path: Path) -> None:
    """A hold-out file as the flat module froze it (its dataset's class named by the old
    path) loads through `registry.holdout.load`, whole."""
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "topic_id": [1, 2], "weak": [True, False]})
    data = FocusAreaData(train=frame, holdout=frame.iloc[1:], holdout_origin=datetime(2026, 5, 1))
    path = holdout.holdout_path(tmp_path, "focus-area")
    path.parent.mkdir(parents=True)
    joblib.dump(data, path, protocol=0)  # uncompressed text opcodes: the path can be edited
    blob = path.read_bytes()
    path.write_bytes(blob.replace(b"ctraining.focus_area.data\n", b"ctraining.focus_area\n"))
    assert b"training.focus_area.data" not in path.read_bytes() and blob != path.read_bytes()
    path.with_suffix(".json").write_text(json.dumps({"sha256": holdout.file_sha256(path)}))
    loaded = holdout.load("focus-area", tmp_path).data
    assert type(loaded) is FocusAreaData
    pd.testing.assert_frame_equal(loaded.train, data.train)
    pd.testing.assert_frame_equal(loaded.holdout, data.holdout)
    assert loaded.holdout_origin == data.holdout_origin
