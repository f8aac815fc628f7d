"""One typed settings object for where things are, and `params.yaml` for what a data
scientist tunes.

Settings come from environment variables (validated once, here); the defaults make
everything run locally with nothing set: an embedded SQLite source and MLflow store
under `PREPIQ_HOME` (`.prepiq/` in the repository).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.exceptions import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Switches that keep every library of the stack from phoning home or writing to the
# user's home directory (see the stack notes): set unless the environment says otherwise.
OFFLINE_ENV: dict[str, str] = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Settings(BaseSettings):
    """Where the platform's data, stores and services are. Read from `PREPIQ_*` variables."""

    model_config = SettingsConfigDict(env_prefix="PREPIQ_", extra="ignore")

    home: Path = Field(
        default=PROJECT_ROOT / ".prepiq",
        description="Folder for the embedded source database, MLflow store and Prefect home.",
    )
    source_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the PrepIQ source database (Supabase/PostgreSQL). "
        "Default: the embedded SQLite file under PREPIQ_HOME.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "PREPIQ_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server or store. Default: SQLite under PREPIQ_HOME.",
    )
    optuna_storage: str | None = Field(
        default=None,
        description="Optuna study storage shared by tuning workers (a PostgreSQL URL lets "
        "workers on several machines join one study). Default: in memory for one process, "
        "a journal file under PREPIQ_HOME for `--workers N` on one machine.",
    )
    params_file: Path = Field(default=PROJECT_ROOT / "params.yaml")
    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="DVC-tracked data: snapshots (raw/), feature tables, validation reports.",
    )
    dvc_remote_url: str | None = Field(
        default=None,
        description="The DVC remote every training run pushes its snapshot to and "
        "`prepiq reproduce` restores it from (any URL DVC takes, or a folder). When set, a "
        "failed push stops training. Default: the DVC repository's default remote "
        "(.dvc/config: .prepiq/dvc-remote), where a failed push is only a warning.",
    )

    # Connection pooling for PostgreSQL, shared by every component that opens the source.
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_pre_ping: bool = True
    db_pool_recycle_seconds: int = Field(default=1800, ge=-1)
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    db_connect_timeout_seconds: int = Field(default=10, ge=1)

    # Serving (the BentoML service the app calls).
    supabase_jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "PREPIQ_SUPABASE_JWT_SECRET"),
        description="Supabase's JWT secret (HS256): user tokens are checked against it.",
    )
    supabase_jwks_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_JWKS_URL", "PREPIQ_SUPABASE_JWKS_URL"),
        description="Supabase's published signing keys (`<project URL>/auth/v1/.well-known/"
        "jwks.json`): user tokens signed with the asymmetric keys (ES256/RS256) are checked "
        "against them.",
    )
    jwks_cache_seconds: float = Field(
        default=300.0, gt=0, description="How long fetched signing keys are reused."
    )
    jwt_audience: str = Field(default="authenticated", description="Required `aud` claim.")
    serving_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys of service callers (any student's rows), comma-separated.",
    )
    serving_admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys that may also call admin routes (reload), comma-separated.",
    )
    serving_rate_limit: str = Field(
        default="600/minute",
        description="Per-caller limit on the ML routes, in the `limits` notation.",
    )
    serving_anonymous_rate_limit: str = Field(
        default="60/minute",
        description="Limit on requests to the ML routes that carry no valid credentials, "
        "per client address (what guessing keys or tokens can try), in the `limits` "
        "notation; over it they get 429 instead of 401.",
    )
    serving_rate_limit_strategy: Literal[
        "sliding-window-counter", "moving-window", "fixed-window"
    ] = Field(
        default="sliding-window-counter",
        description="How the limits count (`limits` strategies): sliding-window-counter "
        "keeps two counters per caller (this window and the last, weighted), O(1) per "
        "request and close to exact; moving-window keeps every hit of the window, exact "
        "at any instant (no window edge lets a burst through) at memory per hit; "
        "fixed-window is cheapest and lets up to twice the limit through across an edge.",
    )
    serving_rate_limit_storage: str = Field(
        default="memory://",
        pattern=r"^(memory|redis|rediss|redis\+sentinel|redis\+cluster|valkey|valkeys)://",
        description="Where the rate limit counts live (a `limits` storage URI): memory:// "
        "counts per worker process; redis://HOST:PORT shares them between workers and "
        "replicas, so a caller's limit holds across all of them.",
    )
    serving_workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Service worker processes (each loads the four models, ~700 MB). More "
        "than one needs a shared rate-limit storage to keep the per-caller limit.",
    )
    serving_champion_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often each worker reads the registry's champion aliases; a "
        "promotion or a rollback reaches every worker of every replica within this.",
    )
    serving_required_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Model keys /readyz waits for, comma-separated (default: all four). "
        "Models not listed serve when they can; their routes answer 503 until then.",
    )
    serving_source_check_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long /readyz reuses its check that the source database answers; "
        "a request that finds the source down marks it down at once.",
    )
    serving_alert_window_seconds: float = Field(
        default=300.0, gt=0, description="The window the serving alarms look at."
    )
    serving_alert_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="Share of API requests answered 5xx that alerts."
    )
    serving_alert_p99_ms: float = Field(
        default=1000.0, gt=0, description="p99 latency of API requests past which it alerts."
    )
    serving_alert_min_requests: int = Field(
        default=20, ge=1, description="Requests a window needs before it can alert."
    )
    serving_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    serving_request_timeout_seconds: float = Field(default=10.0, gt=0)
    serving_max_concurrency: int = Field(
        default=64, ge=1, description="Requests in flight before new ones get 429."
    )
    serving_inference_threads: int = Field(
        default=8,
        ge=1,
        description="Threads that build features and run the models. More than the cores: "
        "requests waiting in the recommender's queue hold one, and the queue is what "
        "shares a model call (serving.batching).",
    )
    serving_catalogue_ttl_seconds: float = Field(
        default=600.0, gt=0, description="How long the cached catalogue tables are kept."
    )
    serving_materialised_students: int = Field(
        default=2000,
        ge=0,
        description="Students whose inputs are built ahead of requests (the most recently "
        "active and the recently requested); 0 turns the materialised store off.",
    )
    serving_materialise_seconds: float = Field(
        default=30.0, gt=0, description="Seconds between the materialised store's refreshes."
    )
    serving_materialised_max_age_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Oldest materialised input a request may use (its ages, such as days "
        "since the last attempt, move with the clock); rebuilt at half this age.",
    )
    serving_log_batch_size: int = Field(default=200, ge=1)
    serving_log_flush_seconds: float = Field(default=1.0, gt=0)
    serving_log_retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between failed prediction-log inserts."
    )
    serving_spool: bool = Field(
        default=True,
        description="Answer a prediction only once its log row is fsynced to the local spool "
        "(no prediction lost on a crash); off, rows wait in memory only.",
    )
    serving_spool_dir: Path | None = Field(
        default=None,
        description="Folder of the prediction spool (one file set per worker; spools of dead "
        "workers are replayed from here). Default: PREPIQ_HOME/serving-spool.",
    )
    serving_spool_max_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="Spool size per worker past which new rows are dropped (counted) while "
        "the database stays down.",
    )

    # Database upkeep and alerting.
    alert_webhook_url: str | None = Field(
        default=None, description="Alerts are POSTed here as JSON (Slack-style relay, etc.)."
    )
    alert_block: str | None = Field(
        default=None,
        description="A saved Prefect notification block that alerts go through, as "
        "`<block-type-slug>/<name>` (e.g. `slack-webhook/ops`).",
    )
    alert_timeout_seconds: float = Field(default=5.0, gt=0)
    slow_query_seconds: float = Field(
        default=0.5, ge=0, description="Queries slower than this are logged and counted."
    )
    prediction_retention_days: int = Field(
        default=90, ge=0, description="`model_predictions` rows older than this are archived."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator(
        "serving_api_keys", "serving_admin_api_keys", "serving_required_models", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("home", "data_dir")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_source_url(self) -> str:
        """The source database URL, defaulting to the embedded SQLite file."""
        return self.source_url or f"sqlite:///{self.home / 'source.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to a SQLite store under PREPIQ_HOME."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_spool_dir(self) -> Path:
        """Where the service's prediction spool lives."""
        return (self.serving_spool_dir or self.home / "serving-spool").expanduser().resolve()

    @property
    def ground_truth_dir(self) -> Path:
        """Where the synthetic generator keeps its ground truth (never read by training)."""
        return self.home / "ground_truth"

    def apply_environment(self) -> None:
        """Set the offline switches and the tool homes, unless already set by the user."""
        self.home.mkdir(parents=True, exist_ok=True)
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        os.environ.setdefault("BENTOML_HOME", str(self.home / "bentoml"))
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.resolved_tracking_uri)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def load_params(path: Path | None = None) -> dict[str, Any]:
    """Read `params.yaml` (the data scientist's knobs) as a plain mapping."""
    params_path = path or get_settings().params_file
    try:
        loaded = yaml.safe_load(params_path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"params file not found: {params_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {params_path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"params file {params_path} must hold a mapping at the top level")
    return loaded


def params_section(
    params: dict[str, Any],
    name: str,
    fields: Iterable[str],
    search_space: Iterable[str] = (),
) -> dict[str, Any]:
    """The section `name` of params.yaml as keyword arguments for its dataclass: lists
    become tuples (the dataclasses are frozen), and an unknown key or search-space
    hyperparameter is an error naming it (a typo must not silently fall back to a
    default)."""
    section = dict(params.get(name) or {})
    known = set(fields)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"params.yaml {name}: unknown keys {unknown}")
    unknown = sorted(set(section.get("search_space") or {}) - set(search_space))
    if unknown:
        raise ConfigError(f"params.yaml {name}.search_space: unknown hyperparameters {unknown}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
