"""Optuna tuning: one study per model per training run, TPE with a fixed seed, pruning,
and every trial a nested MLflow run under the model's parent run.

Storage: in memory for one process (the default); with `workers > 1` and no storage, a
journal file under PREPIQ_HOME shared by the worker processes of this machine; with a
PostgreSQL URL, shared by processes on any number of machines (SQLite breaks under
parallel writers, so it is refused for several workers). The trial budget is the
study's, not each worker's: workers stop when the study holds `trials` trials.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any, Literal

import mlflow
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback

from core.config import get_settings
from core.database import normalise_url
from core.exceptions import ConfigError
from core.logging import configure_logging, get_logger
from training import tracking
from training.model_spec import ModelSpec, TrainingContext, load_frames

log = get_logger("prepiq.tuning")


def resolve_storage(storage: str | None, workers: int, name: str) -> Any:
    """The Optuna storage for a study: None (memory), a journal file, or an RDB URL."""
    if storage is None:
        if workers <= 1:
            return None
        folder = get_settings().home / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(folder / f"{name}.journal")))
    url = normalise_url(storage)
    if url.get_backend_name() == "sqlite" and workers > 1:
        raise ConfigError(
            f"--workers {workers} needs storage several processes can write at once: "
            "set PREPIQ_OPTUNA_STORAGE to a PostgreSQL URL, or leave it unset for a "
            "journal file on this machine"
        )
    return url.render_as_string(hide_password=False)


def run_study(
    study_name: str,
    objective: Callable[[optuna.Trial], float],
    *,
    trials: int,
    seed: int,
    storage: Any = None,
    direction: Literal["minimize", "maximize"] = "maximize",
    parent_run_id: str | None = None,
    worker: int = 0,
) -> optuna.Study:
    """Run trials until the study holds `trials` of them (shared with other workers when
    `storage` is shared)."""
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
        with mlflow.start_run(
            run_name=f"{study_name}-trial-{trial.number}",
            nested=True,
            parent_run_id=parent_run_id,
        ):
            mlflow.set_tags({"optuna_trial": trial.number, "tuning_worker": worker})
            trial.set_user_attr("worker", worker)
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
        done = [t for t in study.trials if t.state.is_finished()]
        best = (
            study.best_value
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in done)
            else None
        )
        log.info(
            "trial finished",
            study=study_name,
            trial=f"{len(done)} of {trials}",
            state=trial.state.name.lower(),
            value=trial.value,
            best_so_far=best,
        )

    # Counting running trials too, so several workers never overshoot the budget.
    budget = MaxTrialsCallback(trials, states=None)
    remaining = trials - len(study.trials)
    if remaining > 0:
        study.optimize(
            tracked, n_trials=remaining, callbacks=[budget, progress], gc_after_trial=True
        )
    return study


def _worker(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    storage: str | None,
    name: str,
    trials: int,
    index: int,
    experiment_id: str,
    parent_run_id: str,
) -> None:
    """A tuning worker process: rebuild the dataset from the snapshot, then join the study."""
    settings = get_settings()
    settings.apply_environment()
    configure_logging(settings.log_level, settings.log_format)
    tracking.configure()
    mlflow.set_experiment(experiment_id=experiment_id)
    data = spec.prepare(ctx, load_frames(ctx))
    run_study(
        name,
        spec.objective(ctx, data),
        trials=trials,
        seed=ctx.seed + index,  # distinct samplers, or every worker proposes the same trial
        storage=resolve_storage(storage, 2, name),
        direction=spec.direction,
        parent_run_id=parent_run_id,
        worker=index,
    )


def tune(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    data: Any,
    *,
    trials: int,
    storage: str | None,
    workers: int,
    name: str,
    experiment_id: str,
    parent_run_id: str,
) -> optuna.Study:
    """Tune `spec` with `workers` processes on one study (this one included)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    shared = resolve_storage(storage, workers, name)
    helpers = []
    if workers > 1:
        # spawn: a fresh interpreter per worker (fork would copy torch and MLflow state).
        context = multiprocessing.get_context("spawn")
        for index in range(1, workers):
            process = context.Process(
                target=_worker,
                args=(spec, ctx, storage, name, trials, index, experiment_id, parent_run_id),
                name=f"tune-{spec.key}-{index}",
            )
            process.start()
            helpers.append(process)
        log.info("tuning workers started", model=spec.key, workers=workers, study=name)
    try:
        study = run_study(
            name,
            spec.objective(ctx, data),
            trials=trials,
            seed=ctx.seed,
            storage=shared,
            direction=spec.direction,
            parent_run_id=parent_run_id,
        )
    finally:
        for process in helpers:
            process.join()
    failed = [p.name for p in helpers if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"tuning worker(s) {failed} failed; see their log lines above")
    if workers > 1:  # reload: the other workers' trials count too
        study = optuna.load_study(study_name=name, storage=shared)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"no trial of {spec.key} completed (all {trials} pruned or failed)")
    return study


def pruning_reporter(trial: optuna.Trial) -> Callable[[int, float], None]:
    """A `report(step, value)` that prunes the trial when Optuna's pruner says so."""

    def report(step: int, value: Any) -> None:
        trial.report(float(value), step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report
