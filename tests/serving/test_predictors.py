"""The serving predictors' exact speed-ups: the forest's probabilities without joblib's
per-tree dispatch equal sklearn's bit for bit (and are only swapped in after a check),
and a subject's ranking is computed once per model and catalogue copy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from serving import predictors


def fitted(kind: type[Any], seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    return kind(n_estimators=40, min_samples_leaf=3, random_state=seed).fit(x, y)


@pytest.mark.parametrize("kind", [ExtraTreesClassifier, RandomForestClassifier])
def test_forest_proba_equals_sklearn_bit_for_bit(kind: type[Any]) -> None:
    forest = fitted(kind)
    rows = np.random.default_rng(1).normal(size=(25, 6))
    assert np.array_equal(predictors.forest_proba(forest, rows), forest.predict_proba(rows))


def test_fast_forest_is_swapped_in_once_checked_and_falls_back_on_nan() -> None:
    forest = fitted(ExtraTreesClassifier, seed=3)
    reference = fitted(ExtraTreesClassifier, seed=3)
    model: Any = SimpleNamespace(model=SimpleNamespace(estimator=forest))
    rows = np.random.default_rng(2).normal(size=(12, 6))
    predictors.use_fast_forest(model, rows)
    assert "predict_proba" in vars(forest)  # the instance now answers with the fast path
    other = np.random.default_rng(4).normal(size=(7, 6))
    assert np.array_equal(forest.predict_proba(other), reference.predict_proba(other))
    other[0, 0] = np.nan  # sklearn's own path (its checks, its missing-value routing)
    assert np.array_equal(forest.predict_proba(other), reference.predict_proba(other))


def test_fast_forest_is_not_used_for_other_models() -> None:
    model: Any = SimpleNamespace(model=SimpleNamespace(estimator=SimpleNamespace()))
    predictors.use_fast_forest(model, np.zeros((1, 6)))
    assert "predict_proba" not in vars(model.model.estimator)


def test_subject_rankings_keep_the_newest_entries() -> None:
    cache = predictors.SubjectRankings(entries=2)
    for key in ("a", "b", "c"):
        cache.put(key, ([], key))
    assert cache.get("a") is None
    assert cache.get("c") == ([], "c")
