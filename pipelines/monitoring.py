"""The monitoring flow (`prepiq monitor`): are the models still fit for what they serve?

1. **Data drift.** The students (and, for the focus areas, the topics) the service answered
   for in the last `lookback_days` (`model_predictions`) get their features rebuilt from
   the source tables with the same builders training uses (`features/`); each feature's
   distribution is compared with the training snapshot's feature table (`data/features/`)
   by the population stability index and a two-sample Kolmogorov-Smirnov test.
2. **Live quality.** Predictions whose outcome has arrived since are scored with the
   models' own label code (each model's `monitoring` module, `training.live`): progress
   forecasts against the completion the student reached, weak-topic flags against the
   later test results.
3. **Decision.** A crossed threshold (`params.yaml: monitoring`) triggers a training run,
   through the Prefect deployment when a server has it, else in this process; the reasons
   go to the MLflow run (tags and params), to an alert, and to the summary.

Drift statistics: scipy (`scipy.stats.ks_2samp`; scipy is pinned already) plus PSI in a
few lines of numpy. Weighed with `pip install --dry-run` against the lock: alibi-detect
0.13 would downgrade numpy, pandas and transformers below the pins; NannyML 0.13 adds about
30 packages (xgboost with a CUDA NCCL wheel, cloud-storage clients); Evidently 0.7 installs
without touching a pin but adds 23 (a web server, nltk, plotly, statsmodels) for the same
two statistics. Every monitored feature is numeric, so no chi-square test is needed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from scipy.stats import ks_2samp

import training.reports  # noqa: F401 (sets matplotlib's Agg backend before the drift plots)
from core.config import get_settings, load_params, params_section
from core.database import get_engine
from core.exceptions import ConfigError, PrepIQError
from features.extract import stream_table, table_spec
from features.frames import SHARED_TABLES, SourceFrames, from_snapshot, from_source, read_table
from features.snapshot import RAW_DIR, read_manifest
from features.store import BUILDERS, FEATURES_DIR
from features.store import TABLES as SNAPSHOT_TABLES
from pipelines.alerts import alert_on_failure, send_alert
from pipelines.train import train_flow
from training import tracking
from training.live import FeatureSet, QualityLimit
from training.models import MODELS
from training.runs import flat_metrics

RETRAIN_MODES = ("auto", "deployment", "in-process")
EPSILON = 1e-4  # floor of a bin's share in PSI, so an empty bin does not give infinity


@dataclass(frozen=True)
class MonitoringParams:
    """The knobs of `params.yaml: monitoring`."""

    lookback_days: int = 7
    quality_lookback_days: int = 120
    max_students: int = 500
    psi_bins: int = 10
    psi_threshold: float = 0.2
    ks_alpha: float = 0.01
    max_drifted_share: float = 0.3
    min_samples: int = 30
    min_outcomes: int = 30
    focus_area_min_f1: float = 0.6
    progress_max_mae_points: float = 8.0
    retrain: bool = True
    retrain_mode: str = "auto"
    retrain_deployment: str = "prepiq-scheduled-training/nightly"
    retrain_models: tuple[str, ...] = ()
    retrain_trials: int | None = None
    experiment: str = "prepiq-monitoring"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MonitoringParams:
        p = cls(**params_section(params, "monitoring", cls.__dataclass_fields__))
        if p.retrain_mode not in RETRAIN_MODES:
            raise ConfigError(
                f"params.yaml monitoring.retrain_mode: {p.retrain_mode!r} is not one of "
                f"{list(RETRAIN_MODES)}"
            )
        unknown = sorted(set(p.retrain_models) - set(MODELS))
        if unknown:
            raise ConfigError(
                f"params.yaml monitoring.retrain_models: unknown model(s) {unknown}; "
                f"choose from {sorted(MODELS)}"
            )
        for key, spec in MODELS.items():
            limit = spec.monitoring.limit
            if limit is not None and limit.params_field not in cls.__dataclass_fields__:
                raise ConfigError(f"{key}'s live-quality limit names no monitoring param {limit}")
        return p

    def limit(self, quality_limit: QualityLimit) -> float:
        """The threshold a model's live-quality limit names (checked in `from_params`)."""
        return float(asdict(self)[quality_limit.params_field])


# The models whose inputs are watched for drift, with their feature tables.
MONITORED: dict[str, FeatureSet] = {
    key: spec.monitoring.features
    for key, spec in MODELS.items()
    if spec.monitoring.features is not None
}
KEY_BY_NAME = {spec.name: key for key, spec in MODELS.items()}


@dataclass
class MonitoringReport:
    """What one monitoring run found and decided."""

    as_of: str
    window_start: str
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    retraining: dict[str, Any] | None = None
    mlflow_run_id: str | None = None

    @property
    def triggered(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"triggered": self.triggered}


# -- what was served ------------------------------------------------------------------------


def served_predictions(engine: Any, start: datetime, end: datetime) -> pd.DataFrame:
    """The logged predictions about a student made in (start, end], with the model's key."""
    spec = table_spec("model_predictions")
    columns = ["model_name", "model_version", "user_id", "response", "created_at"]
    batches = list(stream_table(engine, spec, columns=columns, since=start, as_of=end))
    schema = pa.schema([spec.schema.field(c) for c in columns])
    rows = pa.Table.from_batches(batches, schema=schema).to_pandas()
    rows = rows[rows["user_id"].notna() & rows["model_name"].isin(list(KEY_BY_NAME))]
    rows = rows.assign(
        model=rows["model_name"].map(KEY_BY_NAME),
        response=[json.loads(r) if isinstance(r, str) else r for r in rows["response"]],
        created_at=pd.to_datetime(rows["created_at"], utc=True),
    )
    return rows.reset_index(drop=True)


def sample_students(users: Iterable[str], limit: int) -> list[str]:
    """At most `limit` students, the same ones for the same set (sorted, evenly spaced)."""
    ordered = sorted(set(users))
    if len(ordered) <= limit:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, limit).round().astype(int)
    return [ordered[i] for i in picks]


def students_frames(engine: Any, users: list[str], tables: Iterable[str]) -> SourceFrames:
    """The source rows of these students (catalogue tables read once), the way serving
    reads one student's rows, so a large source is never read whole."""
    tables = sorted(set(tables))
    shared = SourceFrames({t: read_table(engine, t) for t in tables if t in SHARED_TABLES})
    parts = [from_source(engine, user, tables, shared) for user in users]
    merged = {
        t: shared[t] if t in shared.tables else pd.concat([p[t] for p in parts], ignore_index=True)
        for t in tables
    }
    return SourceFrames(merged)


# -- drift ---------------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """Population stability index of `current` against `reference` (0.1: a small shift,
    0.2 and more: a shift worth acting on), over the reference's quantile bins, or, for a
    feature with at most `bins` distinct values (flags, counts), one bin per value seen in
    training plus one for any other."""
    values = np.unique(reference)
    if len(values) <= bins:
        slots = len(values) + 1

        def bin_of(x: np.ndarray) -> np.ndarray:
            at = np.clip(np.searchsorted(values, x), 0, len(values) - 1)
            return np.where(values[at] == x, at, len(values))
    else:
        inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))[1:-1]
        slots = len(inner) + 1

        def bin_of(x: np.ndarray) -> np.ndarray:
            return np.searchsorted(inner, x, side="right")

    expected = np.bincount(bin_of(reference), minlength=slots) / len(reference)
    actual = np.bincount(bin_of(current), minlength=slots) / len(current)
    expected, actual = np.clip(expected, EPSILON, None), np.clip(actual, EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Iterable[str], p: MonitoringParams
) -> dict[str, Any]:
    """Per feature: PSI, the KS statistic and p-value, both means; a feature has drifted
    when the shift is both large (PSI) and not chance (KS), so neither a small sample's
    noise nor a large sample's trivial difference trips it."""
    features: dict[str, dict[str, float | bool]] = {}
    for column in columns:
        ref = reference[column].to_numpy(dtype=float)
        cur = current[column].to_numpy(dtype=float) if column in current else np.array([])
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        if min(len(ref), len(cur)) < p.min_samples:
            continue
        index = psi(ref, cur, p.psi_bins)
        ks = ks_2samp(ref, cur)
        features[column] = {
            "psi": round(index, 4),
            "ks_statistic": round(float(ks.statistic), 4),
            "ks_p_value": float(ks.pvalue),
            "reference_mean": float(ref.mean()),
            "current_mean": float(cur.mean()),
            "drifted": bool(index >= p.psi_threshold and ks.pvalue < p.ks_alpha),
        }
    drifted = sorted(name for name, stats in features.items() if stats["drifted"])
    return {
        "features": features,
        "drifted": drifted,
        "share": len(drifted) / len(features) if features else 0.0,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }


def reference_features(data_dir: Path, table: str) -> pd.DataFrame:
    """The training snapshot's feature table (`prepiq features` / the training flow wrote
    it), else built now from the snapshot with the same builder."""
    path = data_dir / FEATURES_DIR / f"{table}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    manifest = read_manifest(data_dir / RAW_DIR)
    if manifest is None:
        raise ConfigError(f"no training snapshot in {data_dir / RAW_DIR}; run `prepiq train` first")
    frames = from_snapshot(data_dir / RAW_DIR, SNAPSHOT_TABLES)
    return BUILDERS[table][0](frames, datetime.fromisoformat(manifest.as_of))


def current_features(
    engine: Any, predictions: pd.DataFrame, model: str, as_of: datetime, p: MonitoringParams
) -> pd.DataFrame:
    """The served students' features as of `as_of`, built from the source (only the rows
    the model answered about: for the focus areas, the topics)."""
    features = MONITORED[model]
    served = predictions[predictions["model"] == model]
    users = sample_students(served["user_id"], p.max_students)
    frames = students_frames(engine, users, features.source_tables)
    table = BUILDERS[features.table][0](frames, as_of)
    return MODELS[model].monitoring.served_features(table, served)


# -- live quality --------------------------------------------------------------------------


def live_quality(
    engine: Any,
    predictions: pd.DataFrame,
    as_of: datetime,
    params: dict[str, Any],
    max_students: int,
) -> dict[str, dict[str, float]]:
    """Quality of the predictions whose outcome has arrived by `as_of` (of at most
    `max_students` students), by each model's own scoring (`training.<model>.monitoring`)."""
    judged = {key: spec.monitoring for key, spec in MODELS.items() if spec.monitoring.limit}
    scored = predictions[predictions["model"].isin(list(judged))]
    scored = scored[scored["user_id"].isin(sample_students(scored["user_id"], max_students))]
    if scored.empty:
        return {}
    tables = {table for monitoring in judged.values() for table in monitoring.outcome_tables}
    frames = students_frames(engine, sorted(set(scored["user_id"])), tables).as_of(as_of)
    by_model = {model: rows for model, rows in scored.groupby("model")}
    found = {
        key: monitoring.quality(frames, by_model.get(key, scored[:0]), params, as_of)
        for key, monitoring in judged.items()
    }
    return {model: metrics for model, metrics in found.items() if metrics}


# -- the decision --------------------------------------------------------------------------


def retraining_reasons(report: MonitoringReport, p: MonitoringParams) -> list[str]:
    """Every crossed threshold, in words."""
    reasons = []
    for model, drift in report.drift.items():
        if drift["features"] and drift["share"] >= p.max_drifted_share:
            reasons.append(
                f"{model}: {len(drift['drifted'])} of {len(drift['features'])} features "
                f"drifted (share {drift['share']:.2f} >= {p.max_drifted_share}): "
                f"{', '.join(drift['drifted'])}"
            )
    for model, spec in MODELS.items():
        live, quality_limit = report.quality.get(model), spec.monitoring.limit
        if quality_limit is None or not live or live["n"] < p.min_outcomes:
            continue  # nothing to judge, or too few outcomes to judge
        metric, label, floor = quality_limit.metric, quality_limit.label, quality_limit.floor
        limit = p.limit(quality_limit)
        if (live[metric] < limit) if floor else (live[metric] > limit):
            reasons.append(
                f"{model}: live {label} {live[metric]:.3f} {'<' if floor else '>'} {limit} "
                f"over {live['n']:.0f} outcomes"
            )
    return reasons


def deployment_exists(name: str) -> bool:
    """Whether a Prefect server is configured and has the deployment `name`."""
    if not PREFECT_API_URL.value():
        return False
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def start_retraining(
    p: MonitoringParams,
    mode: str,
    source_url: str | None,
    data_dir: Path | None,
    as_of: datetime | None,
) -> dict[str, Any]:
    """Start a training run: the server's deployment (not awaited: the nightly job takes
    minutes) or the training flow in this process (a subflow of the monitoring run)."""
    models = list(p.retrain_models) or None
    if mode == "deployment" or (mode == "auto" and deployment_exists(p.retrain_deployment)):
        parameters: dict[str, Any] = {"models": models, "trials": p.retrain_trials}
        run = run_deployment(  # a sync call here: it returns the FlowRun, not a coroutine
            p.retrain_deployment,
            parameters={k: v for k, v in parameters.items() if v is not None},
            timeout=0,
        )
        return {
            "mode": "deployment",
            "deployment": p.retrain_deployment,
            "flow_run": str(run.id),  # type: ignore[union-attr]
        }
    result = train_flow(
        models=models,
        trials=p.retrain_trials,
        source_url=source_url,
        data_dir=data_dir,
        as_of=as_of,
    )
    return {
        "mode": "in-process",
        "models": {m.model: m.version for m in result.models},
    }


# -- the report ----------------------------------------------------------------------------


def live_summary(key: str, quality: dict[str, float]) -> str:
    """A model's live-quality headline: its limited metric, e.g. the weak flags' F1."""
    limit = MODELS[key].monitoring.limit
    if limit is None or limit.metric not in quality:
        return "-"
    return f"{limit.headline} {quality[limit.metric]:.3f} (n {quality['n']:.0f})"


def summary_rows(report: MonitoringReport) -> list[list[str]]:
    """One line per model: served, drift, live quality (for the CLI's table)."""
    rows = []
    for key in MODELS:
        served = report.served.get(key, {})
        drift = report.drift.get(key) or {"features": {}, "drifted": []}
        drifted: list[str] = drift["drifted"]
        rows.append(
            [
                key,
                str(served.get("predictions", 0)),
                str(served.get("students", 0)),
                f"{len(drifted)}/{len(drift['features'])}" if key in report.drift else "-",
                ", ".join(drifted[:3]) + (" ..." if len(drifted) > 3 else "") or "-",
                live_summary(key, report.quality.get(key, {})),
            ]
        )
    return rows


SUMMARY_HEADER = ["model", "predictions", "students", "drifted", "top drifted", "live quality"]


def drift_plots(
    report: MonitoringReport,
    references: dict[str, pd.DataFrame],
    currents: dict[str, pd.DataFrame],
    psi_threshold: float,
) -> dict[str, Any]:
    """Per model: PSI of every feature against the threshold, and the reference and
    current distributions of its most shifted features."""
    figures = {}
    for model, drift in report.drift.items():
        if not drift["features"]:
            continue
        names = sorted(drift["features"], key=lambda n: drift["features"][n]["psi"])
        top = names[::-1][:4]
        fig, axes = plt.subplots(
            1, 1 + len(top), figsize=(5 + 3.5 * len(top), 0.3 * len(names) + 2)
        )
        axes = np.atleast_1d(axes)
        values = [drift["features"][n]["psi"] for n in names]
        colours = ["tab:red" if drift["features"][n]["drifted"] else "tab:blue" for n in names]
        axes[0].barh(names, values, color=colours)
        axes[0].axvline(psi_threshold, color="black", linestyle="--")
        axes[0].set_xlabel("PSI (red: drifted)")
        axes[0].set_title(model)
        for ax, name in zip(axes[1:], top, strict=True):
            ref, cur = (f[name].to_numpy(dtype=float) for f in (references[model], currents[model]))
            ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
            edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=20)
            ax.hist(ref, bins=edges, density=True, alpha=0.5, label="training snapshot")
            ax.hist(cur, bins=edges, density=True, alpha=0.5, label="served now")
            ax.set_title(f"{name} (PSI {drift['features'][name]['psi']:.2f})", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        figures[f"plots/drift_{model}.png"] = fig
    return figures


def log_to_mlflow(report: MonitoringReport, p: MonitoringParams, figures: dict[str, Any]) -> str:
    """One run in the monitoring experiment: the thresholds as params, the decision and
    its reasons as tags, drift and quality as metrics, the JSON report and the plots."""
    tracking.configure()
    mlflow.set_experiment(experiment_id=tracking.experiment(p.experiment))
    with mlflow.start_run(run_name=f"monitoring-{report.as_of[:16]}") as run:
        mlflow.log_params(tracking.flat_params({"monitoring": asdict(p)}))
        mlflow.set_tags(
            {
                "as_of": report.as_of,
                "window_start": report.window_start,
                "retraining_triggered": str(report.triggered).lower(),
                "retraining_reasons": "; ".join(report.reasons)[:4900] or "none",
                "retraining_mode": (report.retraining or {}).get("mode", "none"),
            }
        )
        drift_metrics = {
            model: {"share": d["share"]}
            | {
                name: {"psi": s["psi"], "ks": s["ks_statistic"]}
                for name, s in d["features"].items()
            }
            for model, d in report.drift.items()
        }
        mlflow.log_metrics(
            flat_metrics("drift", drift_metrics) | flat_metrics("live", report.quality)
        )
        for path, figure in figures.items():
            mlflow.log_figure(figure, path)
            plt.close(figure)
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "monitoring_report.json"
            target.write_text(json.dumps(report.to_dict(), indent=2, default=str))
            mlflow.log_artifact(str(target))
        return str(run.info.run_id)


# -- the flow ------------------------------------------------------------------------------


@task(name="read-served-predictions")
def read_served(url: str, start: datetime, end: datetime) -> pd.DataFrame:
    return served_predictions(get_engine(url), start, end)


@task(name="check-drift")
def check_drift(
    url: str,
    recent: pd.DataFrame,
    model: str,
    data_dir: Path,
    as_of: datetime,
    p: MonitoringParams,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """One model's drift, with the two feature tables it compared (for the plots)."""
    features = MONITORED[model]
    reference = reference_features(data_dir, features.table)
    current = current_features(get_engine(url), recent, model, as_of, p)
    return feature_drift(reference, current, features.columns, p), reference, current


@task(name="check-live-quality")
def check_quality(
    url: str, older: pd.DataFrame, as_of: datetime, params: dict[str, Any], max_students: int
) -> dict[str, dict[str, float]]:
    return live_quality(get_engine(url), older, as_of, params, max_students)


@task(name="log-monitoring-report")
def log_report(
    report: MonitoringReport,
    p: MonitoringParams,
    references: dict[str, pd.DataFrame],
    currents: dict[str, pd.DataFrame],
) -> str:
    return log_to_mlflow(report, p, drift_plots(report, references, currents, p.psi_threshold))


@flow(name="prepiq-monitor", log_prints=True, on_failure=[alert_on_failure])
def monitoring_flow(
    lookback_days: int | None = None,
    as_of: datetime | None = None,
    retrain: bool | None = None,
    retrain_mode: str | None = None,
    source_url: str | None = None,
    data_dir: Path | None = None,
) -> MonitoringReport:
    """Compare what was served lately with the training snapshot, score the predictions
    whose outcomes arrived, and start a training run when a threshold is crossed. Every
    argument defaults to `params.yaml: monitoring` or the settings."""
    params = load_params()
    p = MonitoringParams.from_params(params)
    mode = retrain_mode or p.retrain_mode
    if mode not in RETRAIN_MODES:
        raise ConfigError(
            f"--mode (retrain_mode): {mode!r} is not one of {', '.join(RETRAIN_MODES)}"
        )
    settings = get_settings()
    url = source_url or settings.resolved_source_url
    data = data_dir or settings.data_dir
    end = (as_of or datetime.now(UTC)).astimezone(UTC)
    start = end - timedelta(days=lookback_days or p.lookback_days)
    logger = get_run_logger()

    served = read_served(url, end - timedelta(days=p.quality_lookback_days), end)
    recent = served[served["created_at"] > pd.Timestamp(start)]
    report = MonitoringReport(as_of=end.isoformat(), window_start=start.isoformat())
    report.served = {
        str(model): {"predictions": len(group), "students": group["user_id"].nunique()}
        for model, group in recent.groupby("model")
    }
    references, currents = {}, {}
    for model in MONITORED:
        if model in report.served:
            drift, references[model], currents[model] = check_drift(
                url, recent, model, data, end, p
            )
            report.drift[model] = drift
    report.quality = check_quality(url, served, end, params, p.max_students)
    report.reasons = retraining_reasons(report, p)
    for line in report.reasons:
        logger.warning("retraining threshold crossed: %s", line)
    failure: PrepIQError | None = None
    if report.triggered and (p.retrain if retrain is None else retrain):
        try:
            report.retraining = start_retraining(p, mode, source_url, data_dir, as_of)
        except PrepIQError as exc:  # e.g. the data gate blocked the new snapshot
            report.retraining, failure = {"mode": mode, "error": str(exc)}, exc
        outcome = "its training run failed" if failure else "started a training run"
        send_alert(
            "retraining_triggered",
            f"monitoring {outcome} ({report.retraining['mode']}): " + "; ".join(report.reasons),
            {"as_of": report.as_of, "reasons": report.reasons, "retraining": report.retraining},
        )
    # The decision is recorded even when the training run it started failed.
    report.mlflow_run_id = log_report(report, p, references, currents)
    logger.info(
        "monitoring %s: %s", report.as_of, "retraining triggered" if report.triggered else "ok"
    )
    for row in summary_rows(report):  # the run log of a scheduled run carries the summary
        logger.info(
            " | ".join(f"{name} {cell}" for name, cell in zip(SUMMARY_HEADER, row, strict=True))
        )
    if failure is not None:
        raise failure
    return report
