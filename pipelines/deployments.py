"""The scheduled deployments `prepiq deploy` registers on a Prefect server.

Defined in code rather than in a `prefect.yaml` because, with Prefect 3.9, code lets:
- each schedule (cron, time zone) and each run's parameters live in params.yaml
  (`schedules:`), validated once by `params_section`, instead of a second YAML that
  `prefect deploy` reads on its own;
- entrypoints be module paths (`pipelines.scheduled.scheduled_training_flow`) with our own
  pull step (`InstalledPackage`): a worker runs the flows from the `prepiq-ml` package
  installed on its machine (the Docker training image, a clone after `make venv`), so
  adding workers scales out without copying code around;
- a deployment whose flow module is not there yet be skipped (and registered by the next
  `prepiq deploy` once it is), and the process work pool be created in the same command.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import httpx
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound, ParameterTypeError, SignatureMismatchError
from prefect.settings import PREFECT_API_URL
from prefect.workers.process import ProcessWorker
from pydantic import ValidationError

from core.config import PROJECT_ROOT, get_settings, load_params, params_section
from core.exceptions import ConfigError, PrepIQError


class OrchestratorUnavailableError(PrepIQError):
    """No Prefect server to register on: PREFECT_API_URL unset or not answering."""


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: its name (the key of its `schedules:` entry) and its flow."""

    name: str
    entrypoint: str  # module path: a worker imports it from the installed package
    description: str

    @property
    def module(self) -> str:
        return self.entrypoint.rsplit(".", 1)[0]

    @property
    def function(self) -> str:
        return self.entrypoint.rsplit(".", 1)[1]


DEPLOYMENTS: dict[str, DeploymentSpec] = {
    spec.name: spec
    for spec in (
        DeploymentSpec(
            "nightly",
            "pipelines.scheduled.scheduled_training_flow",
            "Ingest through the data gate, train the four models, promote passing challengers.",
        ),
        DeploymentSpec(
            "weekly-retune",
            "pipelines.scheduled.scheduled_training_flow",
            "The nightly run with a larger Optuna trial budget: a full re-tune, then promotion.",
        ),
        DeploymentSpec(
            "monitoring",
            "pipelines.monitoring.monitoring_flow",
            "Drift and live quality of the served models; triggers retraining past a threshold.",
        ),
        DeploymentSpec(
            "archive",
            "pipelines.archive.archive_flow",
            "Move old model_predictions rows to Parquet under the DVC-tracked archive.",
        ),
    )
}
DEFAULT_POOL = "prepiq"


def prepare_worker() -> dict[str, str]:
    """The deployments' pull step, run on the worker before each flow run: work in the
    project as installed on that machine, with its settings' homes and offline switches
    (a worker starts flows without the CLI, which otherwise sets them)."""
    get_settings().apply_environment()
    return {"directory": str(PROJECT_ROOT)}


class InstalledPackage:
    """Prefect runner storage for flows every worker has installed: nothing is pulled or
    copied; the pull step is `prepare_worker`. (With no pull step, Prefect 3.9's process
    worker copies the deployer's directory, .venv included, into a temporary workspace
    before every run: 85 s here.)"""

    pull_interval = None

    @property
    def destination(self) -> Path:
        return PROJECT_ROOT

    def set_base_path(self, path: Path) -> None:
        """Nothing is pulled, so there is no base path to set."""

    async def pull_code(self) -> None:
        """The code is installed already."""

    def to_pull_step(self) -> dict[str, Any]:
        return {f"{prepare_worker.__module__}.{prepare_worker.__name__}": {}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstalledPackage)

    def __hash__(self) -> int:
        return hash(InstalledPackage)


@dataclass(frozen=True)
class ScheduleConfig:
    """A deployment's entry under `schedules:` in params.yaml."""

    cron: str
    timezone: str = "UTC"
    parameters: dict[str, Any] = field(default_factory=dict)
    active: bool = True


def schedule_configs(params: dict[str, Any]) -> dict[str, ScheduleConfig]:
    """Each deployment's schedule from params.yaml, validated (cron syntax, IANA time zone,
    parameters a mapping); a deployment without an entry runs only when triggered."""
    section = params_section(params, "schedules", DEPLOYMENTS)
    configs = {}
    for name, entry in section.items():
        where = f"schedules.{name}"
        if not isinstance(entry, dict) or "cron" not in entry:
            raise ConfigError(f"params.yaml {where}: expected a mapping with a `cron` key")
        config = ScheduleConfig(
            **params_section({where: entry}, where, [f.name for f in fields(ScheduleConfig)])
        )
        if not isinstance(config.parameters, dict):
            raise ConfigError(f"params.yaml {where}.parameters: expected a mapping")
        try:
            CronSchedule(cron=config.cron, timezone=config.timezone)
        except ValidationError as exc:
            reason = "; ".join(str(error["msg"]) for error in exc.errors())
            raise ConfigError(f"params.yaml {where}: {reason}") from exc
        configs[name] = config
    return configs


def selected(names: list[str] | None) -> list[DeploymentSpec]:
    """The deployments named (all by default); an unknown name is an error naming it."""
    unknown = sorted(set(names or []) - set(DEPLOYMENTS))
    if unknown:
        raise ConfigError(
            f"--deployment: unknown deployment(s) {', '.join(unknown)} "
            f"(known: {', '.join(DEPLOYMENTS)})"
        )
    return [DEPLOYMENTS[name] for name in names] if names else list(DEPLOYMENTS.values())


def load_flow(spec: DeploymentSpec) -> Any:
    """The deployment's flow, or None while its module or function is not written yet."""
    if importlib.util.find_spec(spec.module) is None:
        return None
    return getattr(importlib.import_module(spec.module), spec.function, None)


def check_parameters(spec: DeploymentSpec, flow: Any, parameters: dict[str, Any]) -> None:
    """The flow accepts these parameters (names and types), or a ConfigError naming the key
    (the server would store unknown ones and every run would then fail)."""
    try:
        flow.validate_parameters(parameters)
    except (ParameterTypeError, SignatureMismatchError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"params.yaml schedules.{spec.name}.parameters: {reason}") from exc


def api_url() -> str:
    """The Prefect server's API URL, after checking it answers (one-line errors otherwise)."""
    url = PREFECT_API_URL.value()
    if not url:
        raise OrchestratorUnavailableError(
            "PREFECT_API_URL is not set: start a Prefect server (`prefect server start`) and "
            "export PREFECT_API_URL=http://HOST:4200/api"
        )
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise OrchestratorUnavailableError(
            f"the Prefect server at PREFECT_API_URL={url} does not answer: {exc}"
        ) from exc
    return str(url)


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool `name` unless it exists; returns whether it was created."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            return True
    if pool.type != ProcessWorker.type:
        raise ConfigError(
            f"work pool {name!r} is of type {pool.type}; the deployments run as local "
            "processes: choose another --pool (a process pool is created if missing)"
        )
    return False


@dataclass(frozen=True)
class Registered:
    """What `register` did with one deployment (`full_name` is None when it was skipped)."""

    spec: DeploymentSpec
    full_name: str | None
    schedule: ScheduleConfig | None

    def describe(self) -> str:
        if self.full_name is None:
            return f"{self.spec.name}: skipped ({self.spec.entrypoint} is not written yet)"
        when = (
            f"cron '{self.schedule.cron}' ({self.schedule.timezone})"
            + ("" if self.schedule.active else ", paused")
            if self.schedule
            else "no schedule (runs when triggered)"
        )
        parameters = self.schedule.parameters if self.schedule else {}
        return f"{self.spec.name}: {self.full_name}, {when}, parameters {parameters}"


def register(pool: str = DEFAULT_POOL, names: list[str] | None = None) -> list[Registered]:
    """Register the named deployments (default: every one whose flow exists) on the server
    at PREFECT_API_URL, creating the process work pool `pool` if missing. A deployment
    named explicitly whose flow is not written yet is an error; by default it is skipped."""
    specs = selected(names)
    configs = schedule_configs(load_params())
    flows = {spec.name: load_flow(spec) for spec in specs}
    missing = [spec.entrypoint for spec in specs if names and flows[spec.name] is None]
    if missing:
        raise ConfigError(f"no such flow yet: {', '.join(missing)}")
    for spec in specs:
        if spec.name in configs and flows[spec.name] is not None:
            check_parameters(spec, flows[spec.name], configs[spec.name].parameters)
    api_url()
    ensure_work_pool(pool)
    done = []
    for spec in specs:
        if flows[spec.name] is None:
            done.append(Registered(spec, None, None))
            continue
        config = configs.get(spec.name)
        # Called from sync code, from_storage returns the deployment (not a coroutine).
        deployment = cast(
            RunnerDeployment,
            RunnerDeployment.from_storage(
                InstalledPackage(),
                spec.entrypoint,
                name=spec.name,
                schedules=[CronSchedule(cron=config.cron, timezone=config.timezone)]
                if config
                else None,
                paused=not config.active if config else None,
                parameters=config.parameters if config else {},
                description=spec.description,
                tags=["prepiq"],
                work_pool_name=pool,
            ),
        )
        deployment.apply(work_pool_name=pool)
        done.append(Registered(spec, deployment.full_name, config))
    return done
