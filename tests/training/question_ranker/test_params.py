"""`params.yaml: question_ranker` typed: every key required, none unknown, none coerced."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from training.question_ranker.params import PARAMS, QuestionRankerParams


def _section() -> dict[str, Any]:
    section: dict[str, Any] = load_params(PROJECT_ROOT / "params.yaml")["question_ranker"]
    return section


def test_params_yaml_loads() -> None:
    assert PARAMS is QuestionRankerParams
    p = QuestionRankerParams.from_params(load_params(PROJECT_ROOT / "params.yaml"))
    assert p.trials == _section()["trials"]
    assert p.top_k == 10 and p.holdout_years == 3
    assert p.candidates == ("gradient_boosting", "logistic_regression")
    assert p.search_space.ranges()["recent_years"] == (1, 4)
    assert set(p.search_space.ranges()) == set(_section()["search_space"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bogus": 1}, "question_ranker.bogus: unknown key"),
        ({"trials": "12"}, "question_ranker.trials: Input should be a valid integer"),
        ({"top_k": 10.5}, "question_ranker.top_k: Input should be a valid integer"),
        ({"candidates": ["random_forest"]}, "question_ranker.candidates.0: Input should be"),
    ],
)
def test_an_unknown_or_mistyped_key_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        QuestionRankerParams.from_section(_section() | change)


def test_a_missing_key_is_named() -> None:
    section = _section()
    del section["cv_folds"]
    with pytest.raises(ConfigError, match=re.escape("question_ranker.cv_folds: missing")):
        QuestionRankerParams.from_section(section)


def test_an_unknown_or_missing_hyperparameter_is_named() -> None:
    space = dict(_section()["search_space"])
    with pytest.raises(ConfigError, match=re.escape("question_ranker.search_space.bogus: unknown")):
        QuestionRankerParams.from_section(_section() | {"search_space": space | {"bogus": [1, 2]}})
    del space["lr_c"]
    with pytest.raises(ConfigError, match=re.escape("question_ranker.search_space.lr_c: missing")):
        QuestionRankerParams.from_section(_section() | {"search_space": space})
    mistyped = space | {"lr_c": [0.01, 10.0], "recent_years": ["1", 4]}
    with pytest.raises(ConfigError, match=re.escape("question_ranker.search_space.recent_years")):
        QuestionRankerParams.from_section(_section() | {"search_space": mistyped})


def test_unknown_search_space_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        QuestionRankerParams.from_params({"question_ranker": {"search_space": {"bogus": [1, 2]}}})
