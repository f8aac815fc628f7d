"""Scheduled deployments: the `schedules:` section of params.yaml is validated, `prepiq
deploy` refuses clearly without a server, and end to end against a REAL Prefect server (on
a throwaway PostgreSQL database) it registers the deployments, after which a real process
worker executes one run of the nightly deployment: the run completes, a model version is
registered and the promotion gate judged it (audited under the deployment's name)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import yaml
from mlflow import MlflowClient

from core.config import PROJECT_ROOT, get_settings
from core.exceptions import ConfigError
from core.net import free_port
from pipelines.deployments import (
    DEPLOYMENTS,
    DeploymentSpec,
    Registered,
    load_flow,
    register,
    schedule_configs,
)
from prepiq.cli import main
from registry import audit
from synthetic.generator import seed_source
from tests.conftest import END_DATE, migrated_engine

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 0, tzinfo=UTC)
POOL = "prepiq-test"
STARTUP_SECONDS = 180  # a fresh server migrates its database first (about 30 s under load)
RUN_SECONDS = 600


def project_schedules() -> dict[str, Any]:
    return dict(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["schedules"])


def test_the_project_schedules_are_valid_and_name_known_deployments() -> None:
    configs = schedule_configs({"schedules": project_schedules()})
    assert set(configs) <= set(DEPLOYMENTS)
    assert {"nightly", "weekly-retune"} <= set(configs)
    # The weekly re-tune's budget is larger than any model's nightly one.
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    nightly_trials = [v["trials"] for v in params.values() if isinstance(v, dict) and "trials" in v]
    assert configs["weekly-retune"].parameters["trials"] > max(nightly_trials)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"nightly": {"cron": "0 25 * * *"}}, "schedules.nightly: .*cron"),
        ({"nightly": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}}, "schedules.nightly"),
        (
            {"nightly": {"cron": "0 2 * * *", "tz": "UTC"}},
            r"schedules.nightly: unknown keys \['tz'\]",
        ),
        ({"nightly": {"timezone": "UTC"}}, "schedules.nightly: expected a mapping with a `cron`"),
        ({"hourly": {"cron": "0 * * * *"}}, r"schedules: unknown keys \['hourly'\]"),
    ],
)
def test_a_bad_schedule_is_an_error_naming_it(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schedule_configs({"schedules": entry})


def write_params(folder: Path, schedules: dict[str, Any]) -> Path:
    """The current params file (PREPIQ_PARAMS_FILE) with `schedules` replaced."""
    params = yaml.safe_load(get_settings().params_file.read_text())
    params["schedules"] = schedules
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_parameters_the_flow_lacks_are_refused_before_anything_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedules = {"nightly": {"cron": "0 2 * * *", "parameters": {"trialz": 3}}}
    monkeypatch.setenv("PREPIQ_PARAMS_FILE", str(write_params(tmp_path, schedules)))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match=r"schedules.nightly.parameters: .*\['trialz'\]"):
        register(POOL, ["nightly"])
    get_settings.cache_clear()


def test_a_flow_not_written_yet_is_skipped_or_refused_when_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = DeploymentSpec("archive", "pipelines.not_written_yet.archive_flow", "later")
    monkeypatch.setitem(DEPLOYMENTS, "archive", spec)
    assert load_flow(spec) is None
    assert Registered(spec, None, None).describe() == (
        "archive: skipped (pipelines.not_written_yet.archive_flow is not written yet)"
    )
    with pytest.raises(ConfigError, match=r"no such flow yet: pipelines\.not_written_yet"):
        register(POOL, ["archive"])


def test_deploy_without_a_reachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(["deploy"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: dead}):
        assert main(["deploy", "--deployment", "nightly"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prepiq: error: the Prefect server at PREFECT_API_URL={dead}")
    assert len(err.strip().splitlines()) == 1
    assert main(["deploy", "--deployment", "hourly"]) == 2
    assert "unknown deployment(s) hourly (known: nightly" in capsys.readouterr().err


# -- end to end against a real server and worker -----------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` and every process it started (a worker's flow-run processes
    run in sessions of their own, so a process-group kill would miss them)."""
    try:
        tree = psutil.Process(process.pid)
        procs = [tree, *tree.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    process.wait(timeout=15)


@contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running in the background, its output in `log`; always stopped on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop(process)


def wait_until_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"prefect server not ready in {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


def prefect_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.mark.slow
@pytest.mark.postgres
def test_deploy_registers_the_schedules_and_a_worker_runs_the_nightly_deployment(
    tmp_path: Path,
    small_data_params: Path,
    make_pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prepiq_home"
    schedules = project_schedules()
    # The run stays small: one model, one trial (the project's schedules otherwise).
    schedules["nightly"]["parameters"] = {"models": ["focus-area"], "trials": 1}
    params = write_params(tmp_path, schedules)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    source = f"sqlite:///{tmp_path / 'source.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENTOML_"))},
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api,
        "PREPIQ_HOME": str(home),
        "PREPIQ_PARAMS_FILE": str(params),
        "PREPIQ_SOURCE_URL": source,
        "PREPIQ_DATA_DIR": str(tmp_path / "data"),
        "PREPIQ_LOG_LEVEL": "WARNING",
        "MLFLOW_TRACKING_URI": tracking,
    }
    server_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": make_pg_database().replace(
            "postgresql+psycopg://", "postgresql+asyncpg://"
        ),
    }
    server_command = [prefect_bin("prefect"), "server", "start", "--host", "127.0.0.1",
                      "--port", str(port), "--no-services", "--no-ui"]  # fmt: skip
    with started(server_command, server_env, tmp_path / "server.log") as server:
        # While the server migrates its database: seed the source, import the flows.
        seed_source(
            migrated_engine(source),
            students=160,
            seed=3,
            days=120,
            end_date=END_DATE,
            truth_dir=home / "ground_truth",
        )
        from pipelines.scheduled import scheduled_training_flow

        wait_until_healthy(api, server, tmp_path / "server.log")
        monkeypatch.setenv("PREPIQ_PARAMS_FILE", str(params))
        get_settings.cache_clear()
        with temporary_settings(updates={PREFECT_API_URL: api}):
            assert main(["deploy", "--pool", POOL]) == 0, capsys.readouterr().err
        nightly_name = f"{scheduled_training_flow.name}/nightly"
        out = capsys.readouterr().out
        assert f"nightly: {nightly_name}, cron '0 2 * * 1-6' (UTC)" in out
        for name, spec in DEPLOYMENTS.items():  # skipped only while a flow is not written
            assert (f"{name}: skipped" in out) == (load_flow(spec) is None), out

        from prefect.client.orchestration import SyncPrefectClient
        from prefect.client.schemas.schedules import CronSchedule

        with SyncPrefectClient(api) as client:
            assert client.read_work_pool(POOL).type == "process"
            weekly = client.read_deployment_by_name(f"{scheduled_training_flow.name}/weekly-retune")
            assert weekly.parameters == schedules["weekly-retune"]["parameters"]
            schedule = weekly.schedules[0].schedule
            assert isinstance(schedule, CronSchedule)
            assert schedule.cron == schedules["weekly-retune"]["cron"]
            nightly = client.read_deployment_by_name(nightly_name)
            assert nightly.parameters == {"models": ["focus-area"], "trials": 1}
            # Workers run the installed package: one pull step, nothing downloaded.
            assert nightly.pull_steps == [{"pipelines.deployments.prepare_worker": {}}]
            run = client.create_flow_run_from_deployment(
                nightly.id, parameters={"as_of": AS_OF.isoformat()}
            )

            worker_command = [prefect_bin("prefect"), "worker", "start", "--pool", POOL,
                              "--run-once"]  # fmt: skip
            with started(worker_command, env, tmp_path / "worker.log") as worker:
                worker.wait(timeout=RUN_SECONDS)
            state = client.read_flow_run(run.id).state
            assert state is not None
            assert state.is_completed(), (tmp_path / "worker.log").read_text()[-5000:]

    mlflow = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    versions = mlflow.search_model_versions("name='prepiq-focus-area'")
    assert len(versions) == 1
    # The promotion gate judged the new version, on behalf of the deployment.
    (record,) = audit.history(mlflow, "prepiq-focus-area")
    assert record.actor.startswith("prefect:nightly/")
    assert record.to_version == str(versions[0].version)
    get_settings.cache_clear()
