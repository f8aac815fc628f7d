"""The four champions, loaded from the BentoML model store (under BENTOML_HOME), where
promotion imports each champion as `prepiq-<key>`: the newest entry of a name is the
champion. Each comes with what `/models/status` reports about it (registered version,
aliases, run, data version, trained at, main metric)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import torch

from core.logging import get_logger
from training.model_spec import ModelSpec
from training.models import MODELS

log = get_logger("prepiq.serving.models")

# Models in the order the service reports them; the keys are the store names' suffixes.
SPECS: dict[str, ModelSpec] = MODELS
# Each request's model work is small; torch's default of one thread per core would make
# the forecaster's threads fight the other requests' threads on a 2-core machine.
TORCH_THREADS = 1


@dataclass(frozen=True)
class ServedModel:
    """One loaded champion: the model itself (its pyfunc's Python model, called directly:
    its input comes from the same builders it was trained on, so MLflow's per-call schema
    check would only cost time) and where it came from."""

    key: str
    name: str
    version: str
    run_id: str
    bento_tag: str
    model: Any  # the mlflow PythonModel: predict(None, frame) -> frame
    loaded_at: datetime
    trained_at: datetime | None
    main_metric: str
    main_metric_value: float | None
    data_version: str | None
    aliases: tuple[str, ...]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's output for rows of its feature builder."""
        result: pd.DataFrame = self.model.predict(None, frame)
        return result


def store_name(key: str) -> str:
    """The BentoML store name of a model key (`prepiq-focus-area`)."""
    return f"prepiq-{key}"


def load_model(key: str, tracking_uri: str | None = None) -> ServedModel:
    """The newest store entry of `prepiq-<key>`, loaded and warmed up."""
    import bentoml

    torch.set_num_threads(TORCH_THREADS)
    entry = bentoml.models.get(f"{store_name(key)}:latest")
    pyfunc = bentoml.mlflow.load_model(entry)
    labels = entry.info.labels
    spec = SPECS[key]
    lineage = _lineage(labels.get("mlflow_name", spec.name), labels, spec, tracking_uri)
    served = ServedModel(
        key=key,
        name=labels.get("mlflow_name", spec.name),
        version=labels.get("mlflow_version", "unknown"),
        run_id=labels.get("run_id", ""),
        bento_tag=str(entry.tag),
        model=pyfunc.unwrap_python_model(),
        loaded_at=datetime.now(UTC),
        trained_at=_trained_at(pyfunc),
        main_metric=spec.main_metric,
        **lineage,
    )
    log.info("model loaded", model=served.name, version=served.version, tag=served.bento_tag)
    return served


def _trained_at(pyfunc: Any) -> datetime | None:
    created = getattr(pyfunc.metadata, "utc_time_created", None)
    if not created:
        return None
    return datetime.fromisoformat(str(created)).replace(tzinfo=UTC)


def _lineage(
    name: str, labels: dict[str, str], spec: ModelSpec, tracking_uri: str | None
) -> dict[str, Any]:
    """Data version, hold-out main metric and aliases from the MLflow run and registry.
    The service must start without the tracking server, so anything unreachable is None."""
    empty: dict[str, Any] = {"main_metric_value": None, "data_version": None, "aliases": ()}
    run_id = labels.get("run_id")
    if not run_id:
        return empty
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        run = client.get_run(run_id)
        version = client.get_model_version(name, labels.get("mlflow_version", ""))
    except Exception as exc:  # any failure of an optional lookup: report it, serve anyway
        log.warning("model lineage unavailable", model=name, error=str(exc))
        return empty
    return {
        "main_metric_value": run.data.metrics.get(f"holdout.model.{spec.main_metric}"),
        "data_version": run.data.tags.get("data_version"),
        "aliases": tuple(sorted(version.aliases or ())),
    }


class ModelSet:
    """The served models by key. A reload swaps in a model only once it is loaded, so a
    request in flight keeps the model it started with and none waits."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._models: dict[str, ServedModel] = {}
        self._tracking_uri = tracking_uri
        self._reload_lock = threading.Lock()

    def load_all(self) -> None:
        """Load every model; one that cannot be loaded leaves the service not ready."""
        for key in SPECS:
            try:
                self._models[key] = load_model(key, self._tracking_uri)
            except Exception as exc:  # a missing store entry must not stop the others
                log.error("model not loaded", model=store_name(key), error=str(exc))

    def reload(self) -> dict[str, str]:
        """Load the newest store entry of every model whose tag changed; returns key ->
        tag now served for those."""
        import bentoml

        changed: dict[str, str] = {}
        with self._reload_lock:
            for key in SPECS:
                try:
                    newest = str(bentoml.models.get(f"{store_name(key)}:latest").tag)
                except Exception as exc:
                    log.error("model store entry missing", model=store_name(key), error=str(exc))
                    continue
                current = self._models.get(key)
                if current is None or current.bento_tag != newest:
                    self._models[key] = load_model(key, self._tracking_uri)
                    changed[key] = newest
        return changed

    def get(self, key: str) -> ServedModel | None:
        """The model served for `key` (None when not loaded)."""
        return self._models.get(key)

    @property
    def ready(self) -> bool:
        """Every model loaded."""
        return all(key in self._models for key in SPECS)

    def __iter__(self) -> Any:
        return iter(list(self._models.values()))
