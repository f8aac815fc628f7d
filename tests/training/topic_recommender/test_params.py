"""The topic recommender's params: params.yaml (and the small-source overlay) loads into
`TopicRecommenderParams`; an unknown, missing or mistyped key or hyperparameter is a
`ConfigError` naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from synthetic.small_source import write_small_source_params
from training.topic_recommender.params import PARAMS, TopicRecommenderParams

SECTION = "topic_recommender"


def project_section() -> dict[str, Any]:
    section: dict[str, Any] = load_params(PROJECT_ROOT / "params.yaml")[SECTION]
    return section


def defaults() -> TopicRecommenderParams:
    return TopicRecommenderParams.from_params(load_params(PROJECT_ROOT / "params.yaml"))


def test_params_yaml_and_the_small_source_overlay_load(tmp_path: Path) -> None:
    assert PARAMS is TopicRecommenderParams and PARAMS.SECTION == SECTION
    p = defaults()
    assert p.model_dump(mode="json") == project_section()
    assert set(p.search_space.ranges()) == set(project_section()["search_space"])
    small = yaml.safe_load(write_small_source_params(tmp_path).read_text())
    assert TopicRecommenderParams.from_params(small).min_window_answers == 3


def test_unknown_search_space_key_is_refused() -> None:
    p = defaults()
    with pytest.raises(ConfigError, match="als_bogus"):
        p.replaced(search_space=p.search_space.model_dump(mode="json") | {"als_bogus": [1, 2]})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"window_days": 30}, "topic_recommender.window_days: unknown key"),
        ({"top_k": None}, "topic_recommender.top_k: missing"),
        ({"top_k": "12"}, "topic_recommender.top_k: "),
        ({"mastery_accuracy": "0.9"}, "topic_recommender.mastery_accuracy: "),
        ({"trials": 2.5}, "topic_recommender.trials: "),
    ],
)
def test_a_wrong_key_is_an_error_naming_it(change: dict[str, Any], named: str) -> None:
    section = project_section() | change
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        TopicRecommenderParams.from_section(section)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"als_bogus": [1, 2]}, "topic_recommender.search_space.als_bogus: unknown key"),
        ({"gb_l2": None}, "topic_recommender.search_space.gb_l2: missing"),
        ({"als_factors": ["4", 32]}, "topic_recommender.search_space.als_factors.0: "),
        ({"als_factors": [4.5, 32]}, "topic_recommender.search_space.als_factors.0: "),
        ({"als_alpha": [1.0]}, "topic_recommender.search_space.als_alpha"),
    ],
)
def test_a_wrong_hyperparameter_is_an_error_naming_it(change: dict[str, Any], named: str) -> None:
    space = project_section()["search_space"] | change
    space = {k: v for k, v in space.items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        TopicRecommenderParams.from_section(project_section() | {"search_space": space})
