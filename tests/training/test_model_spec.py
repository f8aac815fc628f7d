"""The model interface: a spec without one of the hooks the gate, reproduce or monitoring
call cannot be built, and the error names the hook."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tests.training.model_stub import StubSpec
from training.model_spec import HOOKS, ModelSpec, Predict, TrainingContext


def without(*names: str) -> dict[str, Any]:
    """The stub's own class body less `names` (and ABCMeta's bookkeeping)."""
    skip = {*names, "__abstractmethods__", "_abc_impl"}
    return {k: v for k, v in vars(StubSpec).items() if k not in skip}


def test_a_complete_spec_is_built_and_named_by_its_card() -> None:
    spec = StubSpec()
    assert (spec.key, spec.name, spec.main_metric, spec.higher_is_better) == (
        "stub",
        "prepiq-stub",
        "f1",
        True,
    )
    assert spec.registered_sections({"model": {}, "baseline_x": {}}) == {
        "model": "model",
        "baseline_x": "baseline_x",
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_a_spec_missing_a_hook_fails_naming_it(hook: str) -> None:
    incomplete = type("Incomplete", (ModelSpec,), without(hook))
    with pytest.raises(TypeError, match=rf"abstract method.*{hook}"):
        incomplete()


def test_a_misspelt_hook_does_not_stand_in_for_the_real_one() -> None:
    def behavior_checks(  # the American spelling: not the hook
        self: Any, ctx: TrainingContext, data: pd.DataFrame, predict: Predict
    ) -> dict[str, tuple[bool, str]]:
        return {}

    namespace = without("behaviour_checks") | {"behavior_checks": behavior_checks}
    misspelt = type("Misspelt", (ModelSpec,), namespace)
    with pytest.raises(TypeError, match="behaviour_checks"):
        misspelt()


def test_a_spec_without_its_card_fails_at_class_creation() -> None:
    with pytest.raises(TypeError, match="class attribute card"):
        type("Nameless", (ModelSpec,), without("card"))


def test_the_hooks_are_the_ones_the_gate_reproduce_and_monitoring_call() -> None:
    assert set(HOOKS) == {
        "build",
        "holdout_size",
        "objective",
        "finish",
        "evaluate",
        "slice_reports",
        "behaviour_checks",
        "request_samples",
        "monitoring",
    }
