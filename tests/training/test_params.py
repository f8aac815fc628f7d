"""params.yaml against every model's typed params: it loads whole, and an unknown, a
missing or a mistyped key in any model's section stops a training context before any work,
naming `section.key` (each model's own keys are tested in tests/training/<model>)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT, load_params
from core.exceptions import ConfigError
from training.catalog import members
from training.model_params import ModelParams
from training.models import MODELS, training_context

PARAMS = load_params(PROJECT_ROOT / "params.yaml")
KINDS: list[type[ModelParams]] = members("params", "PARAMS", ModelParams)


def test_every_model_has_its_typed_params_and_its_spec_uses_them() -> None:
    assert [spec.params_type for spec in MODELS.values()] == KINDS
    assert len({kind.SECTION for kind in KINDS}) == len(MODELS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.SECTION)
def test_params_yaml_loads_into_the_models_params(kind: type[ModelParams]) -> None:
    loaded = kind.from_params(PARAMS)
    assert loaded.model_dump(mode="json").keys() == PARAMS[kind.SECTION].keys()


def broken(section: str, change: str) -> dict[str, Any]:
    params = copy.deepcopy(PARAMS)
    key = next(iter(params[section]))
    if change == "unknown":
        params[section]["no_such_knob"] = 1
    elif change == "missing":
        del params[section][key]
    else:
        params[section]["trials"] = "12"
    return params


@pytest.mark.parametrize("change", ["unknown", "missing", "mistyped"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.SECTION)
def test_a_wrong_key_stops_the_training_context_naming_it(
    kind: type[ModelParams], change: str, tmp_path: Path
) -> None:
    section = kind.SECTION
    key = {
        "unknown": "no_such_knob",
        "missing": next(iter(PARAMS[section])),
        "mistyped": "trials",
    }[change]
    with pytest.raises(ConfigError, match=rf"params.yaml {section}\.{key}: "):
        training_context(
            tmp_path, datetime(2026, 11, 1, tzinfo=UTC), params=broken(section, change)
        )
