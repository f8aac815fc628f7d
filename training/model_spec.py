"""What every model module gives the training run (`training.runs`), so tuning, tracking,
registration and the summary are written once for all four models.

A model module defines a `ModelSpec`: how to build its dataset from the snapshot, the
Optuna objective over that dataset (cross-validation of the training students only),
how to refit the winner, and how to evaluate a model next to its baselines on the
hold-out (also used on registered versions by `prepiq evaluate`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from core.exceptions import HoldoutTooSmallError
from features.frames import SourceFrames, from_snapshot
from features.store import TABLES
from training.card import ModelCard
from training.live import LiveMonitoring
from training.model_params import ModelParams
from training.splits import holdout_students


@dataclass(frozen=True)
class TrainingContext:
    """Everything a model's training reads besides the data: picklable, so tuning worker
    processes rebuild the same dataset and objective from it."""

    snapshot_dir: Path
    data_dir: Path
    as_of: datetime
    params: dict[str, Any]
    seed: int
    trials: int | None = None
    truth_dir: Path | None = None
    students: int | None = None  # train on a stable sample of at most this many students
    _typed: dict[str, ModelParams] = field(default_factory=dict, repr=False, compare=False)

    def typed(self, kind: type[ModelParams]) -> ModelParams:
        """`params`' section of `kind`, validated the first time it is asked for."""
        found = self._typed.get(kind.SECTION)
        if found is None:
            found = self._typed[kind.SECTION] = kind.from_params(self.params)
        return found


def load_frames(ctx: TrainingContext) -> SourceFrames:
    """The snapshot's tables, restricted to a stable sample of students with `--students`."""
    frames = from_snapshot(ctx.snapshot_dir, TABLES)
    if ctx.students:
        users = frames["users"]["id"].tolist()
        if ctx.students < len(users):
            fraction = ctx.students / len(users)
            frames = frames.for_users(holdout_students(users, fraction, ctx.seed))
    return frames


@dataclass
class Outcome:
    """A tuned, refitted and evaluated model, ready to be logged and registered.

    `report` maps "model" and each "baseline_<name>" to its hold-out metrics (plus any
    extra sections such as "against_truth"); `main_metric` names the one that ranks them.
    """

    python_model: PythonModel
    input_example: pd.DataFrame
    requirements: list[str]
    report: dict[str, Any]
    markdown: str
    main_metric: str
    main_label: str
    higher_is_better: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # refit knobs (threshold, ...)
    plots: Callable[[Path], object] | None = None  # writes figures into a folder
    artifacts: dict[str, str] = field(default_factory=dict)  # pyfunc artifacts (name -> path)
    output_example: pd.DataFrame | None = None  # for the signature when predict needs artifacts

    def value(self) -> float:
        return float(self.report["model"][self.main_metric])

    def baselines(self) -> dict[str, float]:
        return {
            name.removeprefix("baseline_"): float(metrics[self.main_metric])
            for name, metrics in self.report.items()
            if name.startswith("baseline_")
        }

    def best_baseline(self) -> tuple[str, float]:
        scores = self.baselines()
        pick = max if self.higher_is_better else min
        name = pick(scores, key=lambda k: scores[k])
        return name, scores[name]


@dataclass(frozen=True)
class HoldoutSize:
    """How big a prepared hold-out is, in the model's unit (`unit`, plural), and the
    params.yaml knobs that change it."""

    count: int
    unit: str
    knobs: tuple[str, ...]


P = TypeVar("P", bound=ModelParams)
D = TypeVar("D")
Predict = Callable[[pd.DataFrame], pd.DataFrame]


class ModelSpec(ABC, Generic[P, D]):
    """A model's entry in the registry of models (`training.catalog`): what training,
    the promotion gate, `prepiq reproduce` and monitoring call. Every hook is abstract, so
    a model that lacks one cannot be instantiated: its `spec` module fails at import with
    Python's "Can't instantiate abstract class ... with abstract method(s) ..." naming it.
    `P` is its typed params, `D` its prepared dataset."""

    card: ClassVar[ModelCard]  # from the model's `inference` module
    params_type: ClassVar[type[ModelParams]]
    direction: ClassVar[Literal["minimize", "maximize"]]  # of the tuning objective

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # ABCMeta sets __abstractmethods__ only after this runs: look at the hooks instead.
        if any(getattr(getattr(cls, hook, None), "__isabstractmethod__", False) for hook in HOOKS):
            return  # an intermediate base; instantiating it names what is missing
        for attribute in ("card", "params_type", "direction"):
            if not hasattr(cls, attribute):
                raise TypeError(f"{cls.__name__} does not set the class attribute {attribute}")

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def key(self) -> str:
        return self.card.key

    @property
    def main_metric(self) -> str:
        return self.card.main_metric

    @property
    def higher_is_better(self) -> bool:
        return self.card.higher_is_better

    def params(self, ctx: TrainingContext) -> P:
        """This model's section of the context's params, typed (validated once per context)."""
        return cast(P, ctx.typed(self.params_type))

    def default_trials(self, ctx: TrainingContext) -> int:
        return self.params(ctx).trials

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> D:
        """The dataset (training students and the hold-out) built from the snapshot,
        refused when its hold-out is below the model's `min_holdout` (HoldoutTooSmallError):
        a metric on a handful of examples would pass for a result."""
        data = self.build(ctx, frames)
        size = self.holdout_size(data)
        minimum = self.params(ctx).min_holdout
        if size.count < minimum:
            section = self.params_type.SECTION
            knobs = ", ".join(f"{section}.{knob}" for knob in size.knobs)
            raise HoldoutTooSmallError(
                f"{self.key}: the hold-out has {size.count} {size.unit}, fewer than "
                f"{section}.min_holdout = {minimum} in params.yaml. Change {knobs} to "
                f"hold out more, or train on more data; lower {section}.min_holdout only "
                "if a metric on fewer is good enough."
            )
        return data

    @abstractmethod
    def build(self, ctx: TrainingContext, frames: SourceFrames) -> D:
        """The dataset (training students and the hold-out) built from the snapshot."""

    @abstractmethod
    def holdout_size(self, data: D) -> HoldoutSize:
        """How many of the model's units (students, pairs, ranked lists) the hold-out of
        `data` scores, and the knobs that change it."""

    @abstractmethod
    def objective(self, ctx: TrainingContext, data: D) -> Callable[[Any], float]:
        """Optuna's objective over the training students (cross-validated)."""

    @abstractmethod
    def finish(
        self, ctx: TrainingContext, data: D, best_params: dict[str, Any], cv_score: float
    ) -> Outcome:
        """Refit the winner and evaluate it next to the baselines on the hold-out."""

    @abstractmethod
    def evaluate(
        self, ctx: TrainingContext, data: D, predict: Predict
    ) -> tuple[dict[str, Any], str]:
        """The hold-out report of any model of this kind (its `predict` as logged: the
        refitted one in `finish`, or a registered version later) next to the baselines,
        and its Markdown tables."""

    @abstractmethod
    def slice_reports(
        self, ctx: TrainingContext, data: D, predict: Predict
    ) -> dict[str, dict[str, float]]:
        """Hold-out metrics per slice (each with `n`) the promotion gate compares."""

    @abstractmethod
    def behaviour_checks(
        self, ctx: TrainingContext, data: D, predict: Predict
    ) -> dict[str, tuple[bool, str]]:
        """The gate's behavioural tests: name -> (passed, what was seen)."""

    @abstractmethod
    def request_samples(self, data: D, count: int) -> list[pd.DataFrame]:
        """`count` single requests as serving sends them (the gate times them)."""

    def registered_sections(self, report: dict[str, Any]) -> dict[str, str]:
        """The sections of a training run's report that score the registered version as
        `evaluate` does, mapped to their name in `evaluate`'s report (`prepiq reproduce`):
        by default every section, under the same name."""
        return {section: section for section in report}

    @property
    @abstractmethod
    def monitoring(self) -> LiveMonitoring:
        """Its drift and live-quality hooks (`training.live`)."""


HOOKS = tuple(sorted(ModelSpec.__abstractmethods__))  # what every model must define
