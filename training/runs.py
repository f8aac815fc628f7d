"""One tracked training run per model: tune, refit, evaluate against the baselines, log
everything to MLflow (lineage, params, nested trials, metrics, report, plots) and log the
model with its signature and pinned requirements as a new registered version."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import infer_signature

from core.config import get_settings, load_params
from features.focus import FEATURE_COLUMNS, feature_matrix
from features.frames import from_snapshot
from features.store import TABLES
from features.validation import report_path
from training import focus_area, reports, tracking

FOCUS_AREA_REQUIREMENTS = ["mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle"]


@dataclass
class RunSummary:
    """What a training run produced, for the flow's summary table."""

    model: str
    run_id: str
    version: str
    main_metric: str
    value: float
    best_baseline: str
    baseline_value: float
    report: str

    @property
    def uplift(self) -> float:
        """Relative improvement of the main metric over the best baseline."""
        return (
            (self.value - self.baseline_value) / abs(self.baseline_value)
            if self.baseline_value
            else float("nan")
        )


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out |= _flat(name, value)
        elif isinstance(value, int | float) and np.isfinite(value):
            out[name] = float(value)
    return out


def train_focus_area(
    snapshot_dir: Path,
    data_dir: Path,
    as_of: datetime,
    *,
    trials: int | None = None,
    storage: str | None = None,
) -> RunSummary:
    """Train, evaluate and log the focus-area identifier on a snapshot."""
    params = load_params()
    seed = int(params.get("seed", 42))
    p = focus_area.FocusAreaParams.from_params(params)
    frames = from_snapshot(snapshot_dir, TABLES)
    tracking.configure()
    # The active experiment, so the nested trial runs land beside their parent.
    mlflow.set_experiment(experiment_id=tracking.experiment(focus_area.NAME))
    run_name = f"focus-area-{as_of:%Y%m%d-%H%M}"
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(tracking.lineage(data_dir) | {"model": focus_area.NAME})
        mlflow.log_params({f"focus_area.{k}": v for k, v in asdict(p).items()} | {"seed": seed})
        mlflow.log_artifact(str(get_settings().params_file))
        gate_report = report_path(data_dir)
        if gate_report.exists():  # the data gate's verdict on the snapshot trained on
            mlflow.log_artifact(str(gate_report), artifact_path="data_gate")
        trained = focus_area.train(
            frames,
            as_of,
            p,
            seed=seed,
            trials=trials or p.trials,
            storage=storage,
            study_name=f"{focus_area.NAME}-{run.info.run_id[:8]}",
            truth_dir=get_settings().ground_truth_dir,
        )
        mlflow.log_params(
            {f"best.{k}": v for k, v in trained.best_params.items()}
            | {"threshold": trained.threshold}
        )
        mlflow.log_metric("cv_pr_auc", trained.cv_score)
        mlflow.log_metrics(_flat("holdout", trained.report))
        holdout = trained.data.holdout
        columns = ["accuracy", "f1", "pr_auc", "roc_auc", "brier", "ece", "n"]
        markdown = reports.markdown_table(
            f"{focus_area.NAME}: hold-out (other students, origin {trained.data.holdout_origin:%Y-%m-%d})",
            {k: v for k, v in trained.report.items() if k != "against_truth"},
            columns,
        )
        if "against_truth" in trained.report:
            markdown += "\n" + reports.markdown_table(
                "against the generator's true weak topics", trained.report["against_truth"], columns
            )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            reports.write(folder, trained.report, markdown)
            x = holdout[list(FEATURE_COLUMNS)]
            y = holdout[focus_area.LABEL].to_numpy()
            reports.classification_plots(
                folder,
                y,
                {
                    "model": trained.estimator.predict_proba(feature_matrix(holdout))[:, 1],
                    "accuracy rule": focus_area.ThresholdRule(p.weak_threshold).weak_probability(
                        holdout
                    ),
                },
            )
            mlflow.log_artifacts(str(folder), artifact_path="evaluation")
        model = focus_area.FocusAreaPyfunc(trained.estimator, trained.threshold)
        example = x.head(5).astype("float64")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            input_example=example,
            signature=infer_signature(example, model.predict(None, example)),
            pip_requirements=tracking.pinned_requirements(FOCUS_AREA_REQUIREMENTS),
            registered_model_name=focus_area.NAME,
        )
    baselines = {k: v["f1"] for k, v in trained.report.items() if k.startswith("baseline_")}
    best = max(baselines, key=lambda k: baselines[k])
    return RunSummary(
        model=focus_area.NAME,
        run_id=run.info.run_id,
        version=str(info.registered_model_version),
        main_metric="holdout weak-class F1",
        value=trained.report["model"]["f1"],
        best_baseline=best.removeprefix("baseline_"),
        baseline_value=baselines[best],
        report=f"runs:/{run.info.run_id}/evaluation/evaluation.md",
    )
