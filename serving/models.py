"""The served models: each model's `champion` in the MLflow registry, followed.

At start and every `serving_champion_poll_seconds` (and on an admin reload) the service
reads every model's aliases in one registry call and, for each model whose champion is
not the version it serves, takes that version's entry from the local BentoML store
(`registry.model_store`), downloading and checking it first when the store has none,
loads it and swaps it in. Every worker of every replica polls for itself, so an alias
moved by a promotion or a rollback anywhere reaches them all within one poll, and a
request in flight keeps the model it started with.

What a model serves when its champion cannot be had:
- at start, the newest intact store entry of the champion's version, else the `previous`
  champion (logged); a model with neither, or with no champion at all, is not served:
  its routes answer 503 naming it, and the other models serve;
- later, the version it serves now (the failure is logged, reported by a reload and on
  `/readyz`, and tried again at the next poll);
- with the registry unreachable, the champions last read on this host
  (`registry.model_store.remembered_aliases`), else the newest intact entry: serving
  never needs MLflow to start once a host has served."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pandas as pd
import torch
from mlflow import MlflowClient

from core.exceptions import ConfigError
from core.logging import get_logger
from registry import model_store
from registry.aliases import CHAMPION, PREVIOUS, all_aliases
from serving.batching import BusyBatcher
from training.card import ModelCard
from training.catalog import cards

log = get_logger("prepiq.serving.models")

# Models in the order the service reports them; the keys are the store names' suffixes.
# Only the models' `inference` modules are imported: serving loads no training code.
CARDS: dict[str, ModelCard] = cards()
Chosen = Literal["champion", "previous", "newest"]
State = Literal["loading", "serving", "no_champion", "failed"]
Aliases = model_store.Aliases
# Each request's model work is small; torch's default of one thread per core would make
# the forecaster's threads fight the other requests' threads on a 2-core machine.
TORCH_THREADS = 1
REGISTRY_PROBE_SECONDS = 3.0
# MLflow's client retries a failing server with backoff for minutes; a poll is retried at
# the next interval anyway.
MLFLOW_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@dataclass(frozen=True)
class ServedModel:
    """One loaded version: the model itself (its pyfunc's Python model, called directly:
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
    chosen_as: Chosen = "champion"
    batcher: BusyBatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batcher", BusyBatcher(self.predict))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's output for rows of its feature builder."""
        result: pd.DataFrame = self.model.predict(None, frame)
        return result

    def predict_shared(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`predict` of one student's rows, in one call with the requests that queue
        while the model is busy (`serving.batching`)."""
        return self.batcher(frame)


@dataclass(frozen=True)
class Availability:
    """Whether a model is served, which version, and why not or why this one."""

    key: str
    state: State
    version: str | None = None  # served
    champion: str | None = None  # the registry's, when known
    reason: str | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Refresh:
    """What one look at the registry changed: model key -> the store entry now served,
    and model key -> why its champion could not be served (the old model stays)."""

    registry: Literal["registry", "remembered", "unreachable"]
    served: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def tracking_server_up(tracking_uri: str, timeout: float = REGISTRY_PROBE_SECONDS) -> bool:
    """False when `tracking_uri` is an MLflow server that does not answer its `/health`
    within `timeout` (a database or file store is not probed: True). MLflow's own client
    would retry a dead server for minutes."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    try:
        return httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def load_model(
    key: str,
    entry: Any,
    chosen: Chosen,
    aliases: Aliases | None,
    client: Any | None = None,
) -> ServedModel:
    """A store entry, loaded, with its lineage from the registry when `client` is given."""
    import bentoml  # noqa: PLC0415 (it reads BENTOML_HOME on import: after the settings apply)

    torch.set_num_threads(TORCH_THREADS)
    pyfunc = bentoml.mlflow.load_model(entry)
    labels = entry.info.labels
    card = CARDS[key]
    name = labels.get("mlflow_name", card.name)
    version = labels.get("mlflow_version", "unknown")
    served = ServedModel(
        key=key,
        name=name,
        version=version,
        run_id=labels.get("run_id", ""),
        bento_tag=str(entry.tag),
        model=pyfunc.unwrap_python_model(),
        loaded_at=datetime.now(UTC),
        trained_at=_trained_at(pyfunc),
        main_metric=card.main_metric,
        aliases=_aliases_of(aliases, name, version),
        chosen_as=chosen,
        **_lineage(name, labels, card, client),
    )
    log.info(
        "model loaded",
        model=served.name,
        version=served.version,
        tag=served.bento_tag,
        chosen_as=chosen,
        aliases=list(served.aliases),
    )
    return served


def _aliases_of(aliases: Aliases | None, name: str, version: str) -> tuple[str, ...]:
    return tuple(sorted(a for a, v in (aliases or {}).get(name, {}).items() if v == version))


def _trained_at(pyfunc: Any) -> datetime | None:
    created = getattr(pyfunc.metadata, "utc_time_created", None)
    if not created:
        return None
    return datetime.fromisoformat(str(created)).replace(tzinfo=UTC)


def _lineage(
    name: str, labels: dict[str, str], card: ModelCard, client: Any | None
) -> dict[str, Any]:
    """Data version and hold-out main metric from the MLflow run (None without a
    registry, or when the run cannot be read: the model serves anyway)."""
    empty: dict[str, Any] = {"main_metric_value": None, "data_version": None}
    run_id = labels.get("run_id")
    if not run_id or client is None:
        return empty
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # any failure of an optional lookup: report it, serve anyway
        log.warning("model lineage unavailable", model=name, error=str(exc))
        return empty
    return {
        "main_metric_value": run.data.metrics.get(f"holdout.model.{card.main_metric}"),
        "data_version": run.data.tags.get("data_version"),
    }


def required_models(keys: Iterable[str]) -> tuple[str, ...]:
    """The models `/readyz` waits for: every one for an empty list or `all`; an unknown
    key is an error naming it."""
    wanted = [k for k in keys if k]
    if not wanted or wanted == ["all"]:
        return tuple(CARDS)
    unknown = sorted(set(wanted) - set(CARDS))
    if unknown:
        raise ConfigError(
            f"PREPIQ_SERVING_REQUIRED_MODELS: unknown model(s) {unknown}; "
            f"choose from {sorted(CARDS)} or 'all'"
        )
    return tuple(k for k in CARDS if k in wanted)


class ModelSet:
    """The served models by key, following the registry (see the module docstring). A
    model is swapped in only once loaded; refreshes never overlap."""

    def __init__(
        self,
        tracking_uri: str | None,
        required: Iterable[str] = (),
        on_swap: Callable[[ServedModel, ServedModel | None], None] | None = None,
    ) -> None:
        for variable, value in MLFLOW_HTTP_ENV.items():
            os.environ.setdefault(variable, value)
        self._tracking_uri = tracking_uri
        self.required = required_models(required)
        self._on_swap = on_swap
        self._models: dict[str, ServedModel] = {}
        self._availability = {key: Availability(key, "loading") for key in CARDS}
        self._refresh_lock = threading.Lock()
        self._remembered: Aliases | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- following the registry ------------------------------------------------------

    def refresh(self) -> Refresh:
        """Read the registry's aliases once and serve each model's champion (or what the
        module docstring says when it cannot be had)."""
        with self._refresh_lock:
            client, aliases, source = self._read_aliases()
            result = Refresh(registry=source)
            for key in CARDS:
                try:
                    self._follow(key, aliases, client, result)
                except Exception as exc:  # one model's surprise must not stop the others
                    log.error("model not followed", model=key, error=str(exc), exc_info=True)
                    result.failed[key] = f"{type(exc).__name__}: {exc}"
            return result

    def follow(self, seconds: float) -> None:
        """Refresh every `seconds` in a background thread, until `close`."""

        def poll() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception as exc:  # the next poll tries again
                    log.error("champion poll failed", error=str(exc))

        self._poller = threading.Thread(target=poll, name="champion-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop following the registry."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _read_aliases(self) -> tuple[Any | None, Aliases | None, Any]:
        """(a registry client, the aliases, where they came from)."""
        names = {card.name for card in CARDS.values()}
        uri = self._tracking_uri
        error = "no answer to /health"
        if uri is None or tracking_server_up(uri):
            try:
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                aliases = all_aliases(client, names)
            except Exception as exc:  # any failure: the remembered aliases, said so
                error = f"{type(exc).__name__}: {exc}"
            else:
                if aliases != self._remembered:  # a file write per change, not per poll
                    model_store.remember_aliases(aliases)
                    self._remembered = aliases
                return client, aliases, "registry"
        remembered = model_store.remembered_aliases()
        if remembered is not None:
            log.warning(
                "model registry unreachable: following the champions last read",
                uri=uri,
                error=error,
                read_at=remembered[1],
            )
            return None, remembered[0], "remembered"
        log.warning(
            "model registry unreachable and never read here: serving the newest store entries",
            uri=uri,
            error=error,
        )
        return None, None, "unreachable"

    def _follow(self, key: str, aliases: Aliases | None, client: Any, result: Refresh) -> None:
        """Serve model `key`'s champion per the module docstring; records the outcome in
        `result` and in the model's availability."""
        current = self._models.get(key)
        name = CARDS[key].name
        held = (aliases or {}).get(name, {})
        champion = held.get(CHAMPION)
        if current is not None and (aliases is None or current.version == champion):
            fresh = _aliases_of(aliases, name, current.version) if aliases else current.aliases
            if fresh != current.aliases:  # e.g. `previous` moved: report it
                self._models[key] = replace(current, aliases=fresh)
            self._availability[key] = replace(self._availability[key], champion=champion)
            return
        if aliases is not None and champion is None:
            why = "no champion in the registry"
            if current is None:
                self._set(key, "no_champion", None, None, why)
            else:  # never take a served model away for a missing alias
                self._set(key, "serving", current.version, None, f"{why}; still serving")
            return
        candidates: list[tuple[Chosen, str | None]]
        if aliases is None:
            candidates = [("newest", None)]
        else:
            candidates = [("champion", champion)]
            if current is None and held.get(PREVIOUS) not in (None, champion):
                candidates.append(("previous", held[PREVIOUS]))
        failures = []
        for chosen, version in candidates:
            try:
                served = self._load(key, chosen, version, aliases, client)
            except Exception as exc:  # this candidate failed: say why, try the next
                failures.append(f"{chosen} v{version}: {type(exc).__name__}: {exc}")
                continue
            if failures:
                log.warning("serving a fallback", model=name, version=version, failed=failures)
            self._swap(served, current)
            result.served[key] = served.bento_tag
            reason = "; ".join(failures) or None
            self._set(key, "serving", served.version, champion, reason)
            return
        reason = "; ".join(failures) or "no intact store entry"
        log.error("champion not served", model=name, champion=champion, reason=reason)
        result.failed[key] = reason
        if current is None:
            self._set(key, "failed", None, champion, reason)
        else:
            self._set(key, "serving", current.version, champion, f"{reason}; still serving")

    def _load(
        self,
        key: str,
        chosen: Chosen,
        version: str | None,
        aliases: Aliases | None,
        client: Any,
    ) -> ServedModel:
        """The intact store entry of `version` (the newest of any version for None),
        fetched from the registry first when the store has none, loaded."""
        entry = model_store.newest_intact(key, version)
        if entry is None and client is not None and version is not None:
            entry = model_store.fetch(client, CARDS[key].name, key, version)
        if entry is None:
            raise LookupError(f"no intact {model_store.store_name(key)} entry in the store")
        return load_model(key, entry, chosen, aliases, client)

    def _swap(self, served: ServedModel, before: ServedModel | None) -> None:
        self._models[served.key] = served
        if self._on_swap is not None:
            self._on_swap(served, before)

    def _set(
        self, key: str, state: State, version: str | None, champion: str | None, why: str | None
    ) -> None:
        now = self._availability[key]
        since = now.since if (now.state, now.version) == (state, version) else datetime.now(UTC)
        self._availability[key] = Availability(key, state, version, champion, why, since)

    # -- what the routes read --------------------------------------------------------

    def get(self, key: str) -> ServedModel | None:
        """The model served for `key` (None when not served)."""
        return self._models.get(key)

    def availability(self, key: str) -> Availability:
        """Whether `key` is served, and why (not)."""
        return self._availability[key]

    @property
    def ready(self) -> bool:
        """Every required model served."""
        return all(key in self._models for key in self.required)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))
