"""The four champions, loaded from the BentoML model store (under BENTOML_HOME), where
promotion imports each champion as `prepiq-<key>`, labelled with its MLflow version. Each
comes with what `/models/status` reports about it (registered version, aliases, run, data
version, trained at, main metric).

Which store entry is the champion: promotion imports into the store BEFORE it moves the
registry aliases, so after a crash between the two the newest entry may be a version that
never became champion. So at start and at every reload the service asks the registry once
(one `search_registered_models` call for all four models) for the aliases, and serves, per
model, the newest entry labelled with the `champion` version. When the registry cannot be
reached, has no champion for the model, or the champion has no store entry, it serves the
newest entry, and logs which rule chose it: serving never needs MLflow to start."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
import torch

from core.logging import get_logger
from serving.batching import BusyBatcher
from training.model_spec import ModelSpec
from training.models import MODELS

log = get_logger("prepiq.serving.models")

# Models in the order the service reports them; the keys are the store names' suffixes.
SPECS: dict[str, ModelSpec] = MODELS
CHAMPION = "champion"
Chosen = Literal["champion", "newest"]
# Model name -> alias -> version, as the registry holds them (None: registry unreachable).
RegistryAliases = dict[str, dict[str, str]]
# Each request's model work is small; torch's default of one thread per core would make
# the forecaster's threads fight the other requests' threads on a 2-core machine.
TORCH_THREADS = 1
REGISTRY_PROBE_SECONDS = 3.0


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "batcher", BusyBatcher(self.predict))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's output for rows of its feature builder."""
        result: pd.DataFrame = self.model.predict(None, frame)
        return result

    def predict_shared(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`predict` of one student's rows, in one call with the requests that queue
        while the model is busy (`serving.batching`)."""
        batcher: BusyBatcher = self.batcher  # type: ignore[attr-defined]
        return batcher(frame)


def store_name(key: str) -> str:
    """The BentoML store name of a model key (`prepiq-focus-area`)."""
    return f"prepiq-{key}"


def registry_aliases(tracking_uri: str | None) -> RegistryAliases | None:
    """Every PrepIQ registered model's aliases, in one registry call; None when the
    registry cannot be reached (the service then serves the newest store entries)."""
    if tracking_uri is not None and not tracking_server_up(tracking_uri):
        log.warning(
            "model registry unreachable: serving the newest store entries", uri=tracking_uri
        )
        return None
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        names = {spec.name for spec in SPECS.values()}
        found = client.search_registered_models(max_results=1000)
    except Exception as exc:  # any failure: serve the newest entries, say so
        log.warning("model registry unreachable: serving the newest store entries", error=str(exc))
        return None
    return {
        m.name: {a: str(v) for a, v in (m.aliases or {}).items()} for m in found if m.name in names
    }


def tracking_server_up(tracking_uri: str, timeout: float = REGISTRY_PROBE_SECONDS) -> bool:
    """False when `tracking_uri` is an MLflow server that does not answer its `/health`
    within `timeout`. MLflow's own client retries a dead server with backoff for minutes
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES), which would hold the service's start that long.
    A database or file store is not probed (True)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    import httpx

    try:
        return httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def choose_entry(key: str, aliases: RegistryAliases | None) -> tuple[Any, Chosen]:
    """The store entry to serve for `key` and the rule that chose it: the newest entry
    labelled with the registry's champion version, else the newest entry."""
    import bentoml

    name = store_name(key)
    entries = sorted(bentoml.models.list(name), key=lambda e: e.creation_time, reverse=True)
    if not entries:
        raise LookupError(f"no entry {name} in the BentoML model store")
    spec_name = SPECS[key].name
    champion = (aliases or {}).get(spec_name, {}).get(CHAMPION)
    if champion is not None:
        for entry in entries:
            if entry.info.labels.get("mlflow_version") == champion:
                if entry is not entries[0]:
                    log.warning(
                        "newest store entry is not the champion: serving the champion's",
                        model=name,
                        champion=champion,
                        newest=str(entries[0].tag),
                        served=str(entry.tag),
                    )
                return entry, "champion"
        log.warning(
            "champion has no store entry: serving the newest",
            model=name,
            champion=champion,
            served=str(entries[0].tag),
        )
    elif aliases is not None:
        log.info("no champion in the registry: serving the newest store entry", model=name)
    return entries[0], "newest"


def load_model(
    key: str,
    tracking_uri: str | None = None,
    aliases: RegistryAliases | None = None,
    chosen: tuple[Any, Chosen] | None = None,
) -> ServedModel:
    """The store entry `chosen` (by default the one `choose_entry` picks for `key` given
    the registry's aliases), loaded."""
    import bentoml

    torch.set_num_threads(TORCH_THREADS)
    entry, rule = chosen or choose_entry(key, aliases)
    pyfunc = bentoml.mlflow.load_model(entry)
    labels = entry.info.labels
    spec = SPECS[key]
    name = labels.get("mlflow_name", spec.name)
    version = labels.get("mlflow_version", "unknown")
    version_aliases = tuple(
        sorted(a for a, v in (aliases or {}).get(name, {}).items() if v == version)
    )
    lineage = _lineage(name, labels, spec, tracking_uri if aliases is not None else None)
    served = ServedModel(
        key=key,
        name=name,
        version=version,
        run_id=labels.get("run_id", ""),
        bento_tag=str(entry.tag),
        model=pyfunc.unwrap_python_model(),
        loaded_at=datetime.now(UTC),
        trained_at=_trained_at(pyfunc),
        main_metric=spec.main_metric,
        aliases=version_aliases,
        **lineage,
    )
    log.info(
        "model loaded",
        model=served.name,
        version=served.version,
        tag=served.bento_tag,
        chosen_as=rule,
        aliases=list(version_aliases),
    )
    return served


def _trained_at(pyfunc: Any) -> datetime | None:
    created = getattr(pyfunc.metadata, "utc_time_created", None)
    if not created:
        return None
    return datetime.fromisoformat(str(created)).replace(tzinfo=UTC)


def _lineage(
    name: str, labels: dict[str, str], spec: ModelSpec, tracking_uri: str | None
) -> dict[str, Any]:
    """Data version and hold-out main metric from the MLflow run (None when the registry
    was unreachable for the aliases, or the run cannot be read: the service serves anyway)."""
    empty: dict[str, Any] = {"main_metric_value": None, "data_version": None}
    run_id = labels.get("run_id")
    if not run_id or tracking_uri is None:
        return empty
    try:
        from mlflow import MlflowClient

        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception as exc:  # any failure of an optional lookup: report it, serve anyway
        log.warning("model lineage unavailable", model=name, error=str(exc))
        return empty
    return {
        "main_metric_value": run.data.metrics.get(f"holdout.model.{spec.main_metric}"),
        "data_version": run.data.tags.get("data_version"),
    }


class ModelSet:
    """The served models by key. A reload swaps in a model only once it is loaded, so a
    request in flight keeps the model it started with and none waits."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._models: dict[str, ServedModel] = {}
        self._tracking_uri = tracking_uri
        self._reload_lock = threading.Lock()

    def load_all(self) -> None:
        """Load every model's champion (one registry call for all); one that cannot be
        loaded leaves the service not ready."""
        aliases = registry_aliases(self._tracking_uri)
        for key in SPECS:
            try:
                self._models[key] = load_model(key, self._tracking_uri, aliases)
            except Exception as exc:  # a missing store entry must not stop the others
                log.error("model not loaded", model=store_name(key), error=str(exc))

    def reload(self) -> dict[str, str]:
        """Serve the entry `choose_entry` now picks (one registry call for all models) for
        every model whose entry changed; returns key -> tag now served for those."""
        changed: dict[str, str] = {}
        with self._reload_lock:
            aliases = registry_aliases(self._tracking_uri)
            for key in SPECS:
                try:
                    chosen = choose_entry(key, aliases)
                except Exception as exc:
                    log.error("model store entry missing", model=store_name(key), error=str(exc))
                    continue
                tag = str(chosen[0].tag)
                current = self._models.get(key)
                if current is not None and current.bento_tag == tag:
                    continue
                try:
                    self._models[key] = load_model(key, self._tracking_uri, aliases, chosen)
                except Exception as exc:  # keep serving the loaded one; reload the others
                    log.error("model not reloaded", model=store_name(key), error=str(exc))
                    continue
                changed[key] = tag
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
