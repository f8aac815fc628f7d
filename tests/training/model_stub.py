"""A complete model spec over a tiny canned dataset, for the tests of the model interface
and of the promotion gate's checks (the real models are tested under tests/training/<model>
and judged by a real gate in tests/registry/test_promotion.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pandas as pd

from features.frames import SourceFrames
from training.card import ModelCard
from training.live import DriftOnly, FeatureSet, LiveMonitoring
from training.model_params import ModelParams
from training.model_spec import HoldoutSize, ModelSpec, Outcome, Predict, TrainingContext

CARD = ModelCard(key="stub", name="prepiq-stub", main_metric="f1", higher_is_better=True)


class StubParams(ModelParams):
    SECTION: ClassVar[str] = "stub"


class StubMonitoring(DriftOnly):
    @property
    def features(self) -> FeatureSet | None:
        return None


class StubSpec(ModelSpec[StubParams, pd.DataFrame]):
    """Every hook answers from what the test set on the instance."""

    card = CARD
    params_type = StubParams
    direction: ClassVar[Literal["minimize", "maximize"]] = "maximize"

    def __init__(
        self,
        behaviour: dict[str, tuple[bool, str]] | None = None,
        samples: list[pd.DataFrame] | None = None,
    ) -> None:
        self.behaviour = {"probe": (True, "fine")} if behaviour is None else behaviour
        self.samples = [] if samples is None else samples

    def build(self, ctx: TrainingContext, frames: SourceFrames) -> pd.DataFrame:
        return pd.DataFrame()

    def holdout_size(self, data: pd.DataFrame) -> HoldoutSize:
        return HoldoutSize(len(data), "rows", ())

    def objective(self, ctx: TrainingContext, data: pd.DataFrame) -> Callable[[Any], float]:
        return lambda trial: 0.0

    def finish(
        self, ctx: TrainingContext, data: pd.DataFrame, best_params: dict[str, Any], cv: float
    ) -> Outcome:
        raise NotImplementedError("the stub is never refitted")

    def evaluate(
        self, ctx: TrainingContext, data: pd.DataFrame, predict: Predict
    ) -> tuple[dict[str, Any], str]:
        return {"model": {"f1": 0.5}}, ""

    def slice_reports(
        self, ctx: TrainingContext, data: pd.DataFrame, predict: Predict
    ) -> dict[str, dict[str, float]]:
        return {}

    def behaviour_checks(
        self, ctx: TrainingContext, data: pd.DataFrame, predict: Predict
    ) -> dict[str, tuple[bool, str]]:
        return self.behaviour

    def request_samples(self, data: pd.DataFrame, count: int) -> list[pd.DataFrame]:
        return self.samples[:count]

    @property
    def monitoring(self) -> LiveMonitoring:
        return StubMonitoring()
