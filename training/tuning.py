"""Optuna tuning: one study per model per training run, TPE with a fixed seed, pruning,
and every trial a nested MLflow run under the model's parent run. Storage is in memory
(one process, the default) or a database URL shared by several processes or machines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import mlflow
import optuna

from core.logging import get_logger

log = get_logger("prepiq.tuning")


def run_study(
    study_name: str,
    objective: Callable[[optuna.Trial], float],
    *,
    trials: int,
    seed: int,
    storage: str | None = None,
    direction: Literal["minimize", "maximize"] = "maximize",
) -> optuna.Study:
    """Run `trials` trials (shared with other workers when `storage` is a database)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        direction=direction,
        load_if_exists=True,
    )

    def tracked(trial: optuna.Trial) -> float:
        with mlflow.start_run(run_name=f"{study_name}-trial-{trial.number}", nested=True):
            mlflow.set_tag("optuna_trial", trial.number)
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                mlflow.log_params(trial.params)
                mlflow.set_tag("state", "pruned")
                raise
            mlflow.log_params(trial.params)
            mlflow.log_metric("cv_score", value)
            mlflow.set_tag("state", "complete")
        return value

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = (
            study.best_value
            if any(t.state.is_finished() and t.value is not None for t in study.trials)
            else None
        )
        log.info(
            "trial finished",
            study=study_name,
            trial=f"{trial.number + 1} of {trials}",
            state=trial.state.name.lower(),
            value=trial.value,
            best_so_far=best,
        )

    study.optimize(tracked, n_trials=trials, callbacks=[progress], gc_after_trial=True)
    return study


def pruning_reporter(trial: optuna.Trial) -> Callable[[int, float], None]:
    """A `report(step, value)` that prunes the trial when Optuna's pruner says so."""

    def report(step: int, value: Any) -> None:
        trial.report(float(value), step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report
