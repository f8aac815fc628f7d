"""`params.yaml: focus_area` as `FocusAreaParams`: every key required, none unknown, each
strictly typed, and the same for the search space's hyperparameters."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from training.focus_area.params import PARAMS, FocusAreaParams, FocusAreaSearchSpace


def section() -> dict[str, Any]:
    return copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml")["focus_area"])


def test_params_yaml_loads() -> None:
    assert PARAMS is FocusAreaParams
    p = FocusAreaParams.from_params(load_params(PROJECT_ROOT / "params.yaml"))
    assert p.label_basis == "raw" and isinstance(p.search_space, FocusAreaSearchSpace)
    assert set(p.search_space.ranges()) == set(section()["search_space"])
    assert p.replaced(label_basis="adjusted").label_basis == "adjusted"


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"focus_area\.label_windw_days: unknown key"):
        FocusAreaParams.from_section(section() | {"label_windw_days": 30})


def test_a_missing_key_is_named() -> None:
    values = section()
    del values["min_label_answers"]
    with pytest.raises(ConfigError, match=r"focus_area\.min_label_answers: missing"):
        FocusAreaParams.from_section(values)


@pytest.mark.parametrize(
    ("key", "value"),
    [("trials", "12"), ("monotone", 1), ("label_basis", "truth"), ("candidates", ["xgb"])],
)
def test_a_mistyped_value_is_named(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"focus_area\.{key}"):
        FocusAreaParams.from_section(section() | {key: value})


def test_an_unknown_hyperparameter_is_named() -> None:
    values = section()
    values["search_space"]["rf_tress"] = [50, 100]
    with pytest.raises(ConfigError, match=r"focus_area\.search_space\.rf_tress: unknown key"):
        FocusAreaParams.from_section(values)


def test_a_missing_hyperparameter_is_named() -> None:
    values = section()
    del values["search_space"]["gb_l2"]
    with pytest.raises(ConfigError, match=r"focus_area\.search_space\.gb_l2: missing"):
        FocusAreaParams.from_section(values)


def test_a_mistyped_hyperparameter_is_named() -> None:
    values = section()
    values["search_space"]["rf_trees"] = [50.5, 100]
    with pytest.raises(ConfigError, match=r"focus_area\.search_space\.rf_trees"):
        FocusAreaParams.from_section(values)
