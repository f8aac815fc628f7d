"""Topic recommender inference: the collaborative fold-in is implicit's own solve, mastered
topics are never recommended, importing the module loads no training code, and a version
pickled by the flat module's path still loads."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pandas as pd

import training.topic_recommender
from features.frames import SourceFrames
from tests.import_probe import forbidden_among, loaded_by
from tests.training.topic_recommender.conftest import one_student
from training.model_spec import Outcome
from training.topic_recommender import inference
from training.topic_recommender.data import RecommenderData
from training.topic_recommender.inference import CollaborativeFilter, practice_signal


def test_fold_in_is_implicits_least_squares(dataset: RecommenderData) -> None:
    """The served fold-in gives the factors implicit's `recalculate_user` gives."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    hp = {
        "als_factors": 6,
        "als_regularization": 0.3,
        "als_iterations": 5,
        "als_alpha": 4.0,
        "als_gain_weight": 1.5,
    }
    cf = CollaborativeFilter.fit(dataset.reference, dataset.topics, hp, seed=1)
    als = AlternatingLeastSquares(
        factors=6, regularization=0.3, alpha=4.0, iterations=1, num_threads=1
    )
    als.fit(csr_matrix((3, len(dataset.topics)), dtype=np.float32), show_progress=False)
    als.item_factors = cf.item_factors.astype(np.float32)
    student = dataset.holdout[dataset.holdout["practised"] > 0]["user_id"].iloc[0]
    rows = dataset.holdout[dataset.holdout["user_id"] == student]
    practised = rows[rows["attempts"] > 0]
    matrix = csr_matrix(
        (
            practice_signal(practised, 1.5).astype(np.float32),
            (
                np.zeros(len(practised), dtype=int),
                np.searchsorted(dataset.topics, practised["topic_id"]),
            ),
        ),
        shape=(1, len(dataset.topics)),
    )
    expected = als.recalculate_user(0, matrix)
    _, factors = cf.user_factors(rows)
    np.testing.assert_allclose(factors[0], expected, rtol=1e-3, atol=1e-4)


def test_recommendations_exclude_mastered_topics(
    outcome: Outcome, frames: SourceFrames, dataset: RecommenderData
) -> None:
    """Behaviour: a topic with near-perfect recent accuracy over many attempts never makes
    the top k, however attractive it is otherwise; the same topic still failing does."""
    rows = one_student(frames, dataset)
    ranked = outcome.python_model.predict(None, rows)
    target = int(ranked["topic_id"].iloc[0])  # the model's own first choice ...
    at = rows["topic_id"] == target
    mastered = rows.copy()
    mastered.loc[at, ["attempts", "attempts_last_30d"]] = [40.0, 20.0]
    mastered.loc[at, ["accuracy", "accuracy_last_30d"]] = [0.97, 1.0]
    mastered.loc[at, "interested"] = 1.0
    assert target not in set(outcome.python_model.predict(None, mastered)["topic_id"])
    struggling = mastered.copy()
    struggling.loc[at, ["accuracy", "accuracy_last_30d"]] = [0.3, 0.3]
    top = outcome.python_model.predict(None, struggling).head(10)
    assert target in set(top["topic_id"])


def test_importing_inference_loads_no_training_code() -> None:
    """In a fresh interpreter (this one has loaded everything): what serving imports of
    the topic recommender loads none of the training modules, Optuna or Lightning."""
    loaded = loaded_by("training.topic_recommender.inference")
    assert forbidden_among(loaded, "training.topic_recommender") == []


class Recorder(pickle.Unpickler):
    """An unpickler that notes every class a pickle names by module path."""

    def __init__(self, blob: bytes) -> None:
        super().__init__(io.BytesIO(blob))
        self.named: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.named.add((module, name))
        return super().find_class(module, name)


def test_a_version_pickled_by_the_flat_modules_path_still_loads(
    outcome: Outcome, frames: SourceFrames, dataset: RecommenderData
) -> None:
    """The package forwards exactly the classes a logged pyfunc pickles: pickled as the
    old code did (`training.topic_recommender.<Name>`), the model loads and ranks alike."""
    model = outcome.python_model
    today = Recorder(pickle.dumps(model))
    today.load()
    ours = {name for module, name in today.named if module.startswith("training.")}
    moved = [n for n, where in training.topic_recommender.MOVED.items() if where == "inference"]
    assert ours == set(moved)
    assert {module for module, _ in today.named if module.startswith("training.")} == {
        inference.__name__
    }

    classes = [getattr(inference, name) for name in moved]
    for kind in classes:
        kind.__module__ = "training.topic_recommender"
    try:
        blob = pickle.dumps(model)
    finally:
        for kind in classes:
            kind.__module__ = inference.__name__
    old = Recorder(blob)
    loaded = old.load()
    assert {m for m, _ in old.named if m.startswith("training.")} == {"training.topic_recommender"}
    assert type(loaded) is inference.TopicRecommenderPyfunc
    rows = one_student(frames, dataset)
    pd.testing.assert_frame_equal(loaded.predict(None, rows), model.predict(None, rows))
    assert not hasattr(training.topic_recommender, "SPEC")  # only the pickled classes
