"""What every model module gives the training run (`training.runs`), so tuning, tracking,
registration and the summary are written once for all four models.

A model module defines a `ModelSpec`: how to build its dataset from the snapshot, the
Optuna objective over that dataset (cross-validation of the training students only),
how to refit the winner, and how to evaluate a model next to its baselines on the
hold-out (also used on registered versions by `prepiq evaluate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from features.frames import SourceFrames
from features.snapshot import RAW_DIR


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


def training_context(
    data_dir: Path,
    as_of: datetime,
    *,
    params: dict[str, Any] | None = None,
    trials: int | None = None,
    students: int | None = None,
) -> TrainingContext:
    """The context every model trains and is evaluated in: the snapshot under `data_dir`,
    the params (params.yaml unless given: `prepiq reproduce` passes the ones a run
    logged), their seed, and the generator's truth folder (absent on a real Supabase)."""
    from core.config import get_settings, load_params

    params = load_params() if params is None else params
    return TrainingContext(
        snapshot_dir=data_dir / RAW_DIR,
        data_dir=data_dir,
        as_of=as_of,
        params=params,
        seed=int(params.get("seed", 42)),
        trials=trials,
        truth_dir=get_settings().ground_truth_dir,
        students=students,
    )


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


class ModelSpec(Protocol):
    """The interface of a model module (see `training.focus_area` for one)."""

    name: str  # the registered model name, e.g. prepiq-focus-area
    key: str  # the CLI name, e.g. focus-area
    direction: Literal["minimize", "maximize"]  # of the tuning objective
    main_metric: str  # the key in report["model"] that ranks models (and the gate uses)
    higher_is_better: bool  # of the main metric

    def default_trials(self, ctx: TrainingContext) -> int: ...

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> Any: ...

    def objective(self, ctx: TrainingContext, data: Any) -> Callable[[Any], float]: ...

    def finish(
        self, ctx: TrainingContext, data: Any, best_params: dict[str, Any], cv_score: float
    ) -> Outcome: ...

    def evaluate(
        self, ctx: TrainingContext, data: Any, predict: Callable[[pd.DataFrame], pd.DataFrame]
    ) -> tuple[dict[str, Any], str]:
        """The hold-out report of any model of this kind (its `predict` as logged: the
        refitted one in `finish`, or a registered version later) next to the baselines,
        and its Markdown tables."""
        ...
