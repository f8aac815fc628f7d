"""The progress forecaster's params: params.yaml (and the small-source overlay) loads into
`ProgressForecasterParams`; an unknown, missing or mistyped key or hyperparameter is a
`ConfigError` naming it; the quantiles need a median between two bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from synthetic.small_source import write_small_source_params
from training.progress_forecaster.params import PARAMS, ProgressForecasterParams

SECTION = "progress_forecaster"


def project_section() -> dict[str, Any]:
    section: dict[str, Any] = load_params(PROJECT_ROOT / "params.yaml")[SECTION]
    return section


def defaults() -> ProgressForecasterParams:
    return ProgressForecasterParams.from_params(load_params(PROJECT_ROOT / "params.yaml"))


def test_params_yaml_and_the_small_source_overlay_load(tmp_path: Path) -> None:
    assert PARAMS is ProgressForecasterParams and PARAMS.SECTION == SECTION
    p = defaults()
    assert p.model_dump(mode="json") == project_section()
    assert p.median == p.quantiles.index(0.5)
    assert set(p.search_space.ranges()) == set(project_section()["search_space"])
    small = yaml.safe_load(write_small_source_params(tmp_path).read_text())
    assert ProgressForecasterParams.from_params(small).horizons_days == (30, 60)


def test_params_reject_unknown_hyperparameters_and_a_missing_median() -> None:
    p = defaults()
    with pytest.raises(ConfigError, match="hidden_units"):
        p.replaced(search_space=p.search_space.model_dump(mode="json") | {"hidden_units": [8, 16]})
    with pytest.raises(ConfigError, match=r"needs 0\.5"):
        p.replaced(quantiles=[0.1, 0.9])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"window_weeks": 8}, "progress_forecaster.window_weeks: unknown key"),
        ({"window_days": None}, "progress_forecaster.window_days: missing"),
        ({"window_days": "12"}, "progress_forecaster.window_days: "),
        ({"holdout_fraction": "0.2"}, "progress_forecaster.holdout_fraction: "),
        ({"horizons_days": [30, "60"]}, "progress_forecaster.horizons_days.1: "),
    ],
)
def test_a_wrong_key_is_an_error_naming_it(change: dict[str, Any], named: str) -> None:
    section = project_section() | change
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        ProgressForecasterParams.from_section(section)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"hidden_units": [8, 16]}, "progress_forecaster.search_space.hidden_units: unknown key"),
        ({"epochs": None}, "progress_forecaster.search_space.epochs: missing"),
        ({"epochs": ["8", 24]}, "progress_forecaster.search_space.epochs.0: "),
        ({"dropout": [0.0]}, "progress_forecaster.search_space.dropout"),
    ],
)
def test_a_wrong_hyperparameter_is_an_error_naming_it(change: dict[str, Any], named: str) -> None:
    space = project_section()["search_space"] | change
    space = {k: v for k, v in space.items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        ProgressForecasterParams.from_section(project_section() | {"search_space": space})
