"""The focus-area model as serving loads it: the logged pyfunc's answer, its numpy
priorities, the old pickled path still resolving, and an `inference` module that loads
nothing of training."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

import training.focus_area
from features.focus import topic_test_stats
from features.frames import from_snapshot
from features.store import TABLES
from tests.import_probe import forbidden_among, loaded_by
from tests.training.focus_area.conftest import AS_OF
from training.focus_area.inference import FocusAreaPyfunc, priority_ranks
from training.model_spec import Outcome


def test_the_logged_model_predicts_suggestions_per_student(
    outcome: Outcome, clean_snapshot: Path
) -> None:
    frames = from_snapshot(clean_snapshot, TABLES)
    user = frames["users"]["id"].iloc[0]
    features = topic_test_stats(frames.for_users([user]), AS_OF)
    predicted = outcome.python_model.predict(None, features)
    assert list(predicted.columns) == [
        "user_id",
        "topic_id",
        "weak_probability",
        "is_weak",
        "expected_score_gain",
        "practice",
        "priority",
    ]
    assert predicted["weak_probability"].between(0, 1).all()
    assert sorted(predicted["priority"]) == list(range(1, len(features) + 1))
    first = predicted.sort_values("priority").iloc[0]
    assert first["expected_score_gain"] == predicted["expected_score_gain"].max()


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
)
def test_priorities_are_pandas_first_ranks_within_each_student(
    rows: list[tuple[str, float]], per_student: bool
) -> None:
    """The numpy priorities serving computes equal pandas' `rank(method="first")` per
    student (ties in row order), with and without a user_id column."""
    users = np.array([u for u, _ in rows], dtype=object)
    key = np.array([k for _, k in rows])
    groups = users if per_student else np.zeros(len(rows))
    expected = pd.Series(key).groupby(groups).rank(method="first").astype(int).to_numpy()
    assert priority_ranks(key, users if per_student else None).tolist() == expected.tolist()


def test_the_inference_module_loads_nothing_of_training() -> None:
    """In a fresh interpreter, importing `training.focus_area.inference` leaves every
    forbidden module (and its submodules) out of `sys.modules`."""
    loaded = loaded_by("training.focus_area.inference")
    assert forbidden_among(loaded, "training.focus_area") == []


def test_a_version_pickled_by_the_flat_module_still_loads(outcome: Outcome) -> None:
    """A pyfunc logged before the split names `training.focus_area.FocusAreaPyfunc`: the
    package forwards the name to `training.focus_area.inference`."""
    assert training.focus_area.FocusAreaPyfunc is FocusAreaPyfunc
    model = outcome.python_model
    assert isinstance(model, FocusAreaPyfunc)
    # Protocol 0 names classes as text lines (no length prefix), so the path can be edited.
    old = pickle.dumps(model, protocol=0).replace(
        b"training.focus_area.inference", b"training.focus_area"
    )
    assert b"training.focus_area.inference" not in old
    loaded = pickle.loads(old)
    assert isinstance(loaded, FocusAreaPyfunc) and loaded.threshold == model.threshold
