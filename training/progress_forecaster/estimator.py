"""Training the progress forecaster: the Lightning module and trainer that fit
`training.progress_forecaster.inference.ForecastNet`, Optuna's search space, and the
cross-validation the tuning objective runs.

Tuning: Optuna over time-ordered cross-validation grouped by student (fit on the other
folds' earlier origins, validate on the fold's latest origins), pruned epoch by epoch
through Lightning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from optuna.trial import FixedTrial
from optuna_integration import PyTorchLightningPruningCallback  # type: ignore[import-untyped]
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from training.progress_forecaster.data import Examples, ForecastData
from training.progress_forecaster.evaluation import horizon_errors
from training.progress_forecaster.inference import (
    LOGINS,
    MINUTES,
    Forecaster,
    ForecastNet,
    InputScaler,
    model_inputs,
    slope_growth,
)
from training.progress_forecaster.params import ProgressForecasterParams
from training.splits import group_folds

MONITOR = "val_mae"  # logged every epoch; what the pruning callback watches
LOG_SCALE = {"hidden_size", "learning_rate"}


def pinball_loss(predicted: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Mean quantile (pinball) loss: predicted [n, horizons, quantiles], target [n, horizons]."""
    error = target.unsqueeze(-1) - predicted
    return torch.maximum(quantiles * error, (quantiles - 1) * error).mean()


class ForecastModule(pl.LightningModule):
    """Trains a `ForecastNet` on growth targets with the pinball loss, plus a penalty
    whenever the same days with more study would get a median forecast less than
    `margin` higher (the net never lowers it; this asks for a rise of a useful size).
    Logs the median's MAE (percentage points) on the validation set every epoch."""

    quantile_levels: Tensor

    def __init__(
        self,
        net: ForecastNet,
        p: ProgressForecasterParams,
        lr: float,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("quantile_levels", torch.tensor(p.quantiles, dtype=torch.float32))
        self.median = p.median
        self.penalty = p.more_study_penalty
        self.margin = p.more_study_margin_points / 100.0
        self.lr = lr

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        daily, facts, study, growth, more_daily, more_facts, more_studied = batch
        predicted = self.net(daily, facts, study)
        loss = pinball_loss(predicted, growth, self.quantile_levels)
        more = self.net(more_daily, more_facts, more_studied)
        rise = more[:, :, self.median] - predicted[:, :, self.median]
        return loss + self.penalty * torch.relu(self.margin - rise).mean()

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        daily, facts, study, growth = batch
        error = (self.net(daily, facts, study)[:, :, self.median] - growth).abs()
        self.log(MONITOR, 100 * error.mean(), on_epoch=True, batch_size=len(growth))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


@dataclass(frozen=True)
class Hyper:
    """One trial's hyperparameters."""

    hidden_size: int
    layers: int
    dropout: float
    learning_rate: float
    epochs: int


def suggest(trial: Any, p: ProgressForecasterParams) -> Hyper:
    """An Optuna trial's hyperparameters (ranges from `params.yaml`)."""
    draws = p.search_space.draws(trial, LOG_SCALE)
    integer, real = draws.integer, draws.real
    return Hyper(
        hidden_size=integer("hidden_size"),
        layers=integer("layers"),
        dropout=real("dropout"),
        learning_rate=real("learning_rate"),
        epochs=integer("epochs"),
    )


def more_study(sequence: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The same days with more study: minutes times `factor` (one per student) and one
    more login on every active day; completion as it was."""
    more = sequence.copy()
    active = sequence[:, :, MINUTES] > 0
    more[:, :, MINUTES] *= np.where(active, factor[:, None], 1.0)
    more[:, :, LOGINS] += active
    return more


def _loader(
    scaler: InputScaler,
    examples: Examples,
    p: ProgressForecasterParams,
    batch_size: int,
    seed: int,
    train: bool,
) -> DataLoader[Any]:
    """Batches of scaled inputs and the growth beyond the recent pace (hundreds of points);
    for training, also the inputs with more study (the shape penalty's counterfactual)."""
    daily, facts, study = scaler.tensors(examples.sequence, examples.static)
    pace = slope_growth(examples.sequence, p.horizons_days, p.slope_days, from_first_record=True)
    growth = torch.as_tensor(
        (examples.target - examples.completion[:, None] - pace) / 100.0, dtype=torch.float32
    )
    tensors = [daily, facts, study, growth]
    if train:
        factor = np.random.default_rng(seed).uniform(1.2, 2.0, len(examples))
        tensors += scaler.tensors(more_study(examples.sequence, factor), examples.static)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=batch_size,
        shuffle=batch_size < len(examples),
        generator=torch.Generator().manual_seed(seed),
    )


def fit(
    examples: Examples,
    hyper: Hyper,
    p: ProgressForecasterParams,
    seed: int,
    validation: Examples | None = None,
    callbacks: list[Any] | None = None,
) -> Forecaster:
    """Train the network on `examples` (scaler fitted on them too). With `validation`, the
    median's MAE on it is logged every epoch for `callbacks` (pruning)."""
    torch.set_num_threads(p.torch_threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    scaler = InputScaler.fit(examples)
    daily, facts, study = model_inputs(examples.sequence[:1], examples.static[:1])
    net = ForecastNet(
        daily.shape[2],
        facts.shape[1],
        study.shape[1],
        hyper.hidden_size,
        hyper.layers,
        hyper.dropout,
        len(p.horizons_days),
        len(p.quantiles),
    )
    module = ForecastModule(net, p, hyper.learning_rate)
    # Lightning's notices (no GPU, few loader workers) are noise for a CPU-only fit.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=hyper.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks or [],
    )
    scored = None
    if validation is not None:
        scored = _loader(scaler, validation, p, len(validation), seed, train=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        trainer.fit(module, _loader(scaler, examples, p, p.batch_size, seed, train=True), scored)
    return Forecaster(net.eval(), scaler, p.horizons_days, p.quantiles, p.slope_days)


def refit(
    train: Examples, best_params: dict[str, Any], p: ProgressForecasterParams, seed: int
) -> Forecaster:
    """The tuning winner (`best_params`, as Optuna gives them) fitted on every training
    example."""
    return fit(train, suggest(FixedTrial(best_params), p), p, seed)


# -- cross-validation ----------------------------------------------------------------------


def time_ordered_folds(
    train: Examples, p: ProgressForecasterParams, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds grouped by student and ordered in time: each fold validates
    on its students at the latest `cv_validation_origins` origins and fits on the other
    students at strictly earlier origins."""
    latest = np.unique(train.origin)[-p.cv_validation_origins :]
    late = np.isin(train.origin, latest)
    early = train.origin < latest.min()
    folds = []
    for fit_rows, score_rows in group_folds(train.user_id, p.cv_folds, seed):
        folds.append((fit_rows[early[fit_rows]], score_rows[late[score_rows]]))
    return folds


def objective(data: ForecastData, p: ProgressForecasterParams, seed: int) -> Callable[[Any], float]:
    """Mean MAE over horizons of the median forecast, over time-ordered folds grouped
    by student; the first fold's epochs feed the pruner."""
    folds = time_ordered_folds(data.train, p, seed)

    def objective(trial: Any) -> float:
        hyper = suggest(trial, p)
        maes = []
        for k, (fit_rows, score_rows) in enumerate(folds):
            validation = data.train.subset(score_rows)
            # Epoch-level reports from one fold only: the pruner compares trials
            # step by step, and later folds would repeat the same steps.
            callbacks = [PyTorchLightningPruningCallback(trial, MONITOR)] if k == 0 else []
            forecaster = fit(data.train.subset(fit_rows), hyper, p, seed, validation, callbacks)
            median = forecaster.predict(validation.sequence, validation.static)[:, :, p.median]
            maes.append(horizon_errors(validation.target, median, p.horizons_days)["mae_mean"])
        return float(np.mean(maes))

    return objective
