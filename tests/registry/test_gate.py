"""The promotion gate's checks, one by one, on a complete stub spec (the whole gate, with
real registered versions in a real MLflow registry, is tested in test_promotion.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.config import PROJECT_ROOT, load_params
from registry.gate import (
    BEHAVIOUR,
    LATENCY,
    PromotionParams,
    Scored,
    baseline_check,
    behaviour_check,
    latency_check,
    slice_check,
    uplift_check,
)
from tests.training.model_stub import StubSpec
from training.model_spec import TrainingContext

PARAMS = PromotionParams.from_params(load_params(PROJECT_ROOT / "params.yaml"))


def scored(
    value: float, slices: dict[str, dict[str, float]] | None = None, **baselines: float
) -> Scored:
    report = {"model": {"f1": value}} | {f"baseline_{k}": {"f1": v} for k, v in baselines.items()}
    return Scored("challenger", "2", "run", report, "", value, slices or {})


def context(tmp_path: Path) -> TrainingContext:
    return TrainingContext(tmp_path, tmp_path, datetime(2026, 11, 1, tzinfo=UTC), {}, 7)


def echo(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def test_uplift_needs_the_minimum_gain_over_the_champion() -> None:
    spec = StubSpec()
    assert uplift_check(spec, scored(0.50), scored(0.51), 0.01).passed
    assert not uplift_check(spec, scored(0.50), scored(0.502), 0.01).passed


def test_a_slice_regressing_beyond_the_tolerance_fails_and_small_slices_are_skipped() -> None:
    spec = StubSpec()
    big, small = PARAMS.min_slice_size, PARAMS.min_slice_size - 1
    champion = scored(0.6, {"new": {"f1": 0.6, "n": big}, "tiny": {"f1": 0.9, "n": small}})
    fine = scored(0.6, {"new": {"f1": 0.59, "n": big}, "tiny": {"f1": 0.1, "n": small}})
    worse = scored(0.6, {"new": {"f1": 0.50, "n": big}, "tiny": {"f1": 0.9, "n": small}})
    kept = slice_check(spec, champion, fine, PARAMS)
    assert kept.passed and "1 too small to judge" in kept.reason
    broken = slice_check(spec, champion, worse, PARAMS)
    assert not broken.passed and "new 0.600 -> 0.500" in broken.reason


def test_the_challenger_must_beat_every_baseline() -> None:
    spec = StubSpec()
    assert baseline_check(spec, scored(0.6, rule=0.5, popular=0.55)).passed
    losing = baseline_check(spec, scored(0.6, rule=0.5, popular=0.65))
    assert not losing.passed and "popular 0.6500" in losing.reason


def test_a_failed_behavioural_check_fails_the_gate_and_is_named(tmp_path: Path) -> None:
    spec = StubSpec(
        behaviour={"more study raises": (False, "2/5 rose"), "wrong flags": (True, "ok")}
    )
    check = behaviour_check(spec, context(tmp_path), pd.DataFrame(), echo)
    assert (check.name, check.passed, check.judged) == (BEHAVIOUR, False, True)
    assert check.reason == "more study raises: 2/5 rose"


def test_behavioural_checks_that_run_nothing_fail_instead_of_passing(tmp_path: Path) -> None:
    check = behaviour_check(StubSpec(behaviour={}), context(tmp_path), pd.DataFrame(), echo)
    assert not check.passed and "ran none" in check.reason


class Timed:
    """Stands in for a loaded pyfunc: the latency check only calls its `predict`."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame


def test_latency_is_timed_on_the_specs_own_requests_and_none_is_a_failure() -> None:
    requests = [pd.DataFrame({"x": [i]}) for i in range(5)]
    timed = latency_check(StubSpec(samples=requests), pd.DataFrame(), Timed(), 0.1, PARAMS)  # type: ignore[arg-type]
    assert timed.name == LATENCY and timed.passed and "over 5 single requests" in timed.reason
    none = latency_check(StubSpec(samples=[]), pd.DataFrame(), Timed(), 0.1, PARAMS)  # type: ignore[arg-type]
    assert not none.passed and "no request samples" in none.reason
