"""Training reaches serving through the registry alone, in the real topology: an `mlflow
server` with a PostgreSQL backend store and served artifacts, and two homes that share
nothing but its URL (and the app's database).

- Home A, the trainer and promoter, runs the CI job's own script
  (deploy/ci/train-and-promote.sh): train every model, then the gate; it ends 0 and each
  model's promotion ends promoted, kept or refused.
- Home B runs `prepiq serve` with two workers and an empty BentoML store: it comes up
  serving every champion (fetched from the server), a model without one answers 503
  naming it; an alias moved in home A reaches both workers within the poll interval with
  no failed request, and `prepiq rollback` travels the same way.
- A third home (a fresh CI runner) finds the hold-outs home A stored instead of freezing
  its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from core.config import OFFLINE_ENV, PROJECT_ROOT
from core.net import free_port
from registry import holdout
from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version
from synthetic.small_source import write_small_source_params
from tests.conftest import migrated_engine
from tests.serving_support import as_admin, as_service, service_env, started
from training.models import MODELS

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PREPIQ = Path(sys.executable).parent / "prepiq"
SCRIPT = PROJECT_ROOT / "deploy" / "ci" / "train-and-promote.sh"
POLL_SECONDS = 2.0
SWITCH_TIMEOUT_S = 120.0
FOCUS = "focus-area"


class Home:
    """One machine's environment: its own PREPIQ_HOME and data folder; the tracking server
    and the source are the only things it shares."""

    def __init__(self, root: Path, tracking_uri: str, source_url: str, params: Path) -> None:
        self.root = root
        own = ("PREPIQ_", "MLFLOW_", "PREFECT_", "BENTOML_")  # this session's homes
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(own)},
            **OFFLINE_ENV,
            "BENTOML_HOME": str(root / "home" / "bentoml"),
            "PREFECT_HOME": str(root / "home" / "prefect"),
            "PREPIQ_HOME": str(root / "home"),
            "PREPIQ_DATA_DIR": str(root / "data"),
            "PREPIQ_PARAMS_FILE": str(params),
            "PREPIQ_SOURCE_URL": source_url,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PREPIQ_DVC_REMOTE_URL": str(root / "dvc-remote"),  # where its snapshots go
            "PREPIQ_LOG_FORMAT": "json",
        }

    def run(self, *command: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(c) for c in command],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            cwd=PROJECT_ROOT,
        )


@pytest.fixture(scope="module")
def tracking_server(
    make_pg_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`mlflow server` on a PostgreSQL backend store, serving the artifacts it stores."""
    folder = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", make_pg_database(),
        "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **OFFLINE_ENV}
    with started(command, env, folder / "mlflow.log", f"{url}/health"):
        yield url


@pytest.fixture(scope="module")
def source(make_pg_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app's database: a small synthetic source on PostgreSQL, up to yesterday (the
    training job ingests up to now, as the nightly job does)."""
    from synthetic.generator import seed_source

    url = make_pg_database()
    truth = tmp_path_factory.mktemp("truth")
    seed_source(migrated_engine(url), students=300, seed=11, days=120, truth_dir=truth)
    return url


@pytest.fixture(scope="module")
def trainer(
    tracking_server: str, source: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Home, subprocess.CompletedProcess[str]]:
    """Home A after the CI job's script: (the home, the script's run)."""
    root = tmp_path_factory.mktemp("home-a")
    params = write_small_source_params(root)
    home = Home(root, tracking_server, source, params)
    done = home.run(
        SCRIPT,
        PREPIQ=str(PREPIQ),
        TRIALS="1",
        GITHUB_STEP_SUMMARY=str(root / "summary.md"),
        GITHUB_OUTPUT=str(root / "github-output"),
    )
    return home, done


def test_the_ci_script_trains_and_promotes_against_the_tracking_server(
    trainer: tuple[Home, subprocess.CompletedProcess[str]], tracking_server: str
) -> None:
    home, done = trainer
    assert done.returncode == 0, done.stderr[-4000:]
    code = (home.root / "github-output").read_text().strip()
    assert code in ("exit_code=0", "exit_code=3"), code
    summary = (home.root / "summary.md").read_text()
    client = MlflowClient(tracking_server, tracking_server)
    for spec in MODELS.values():
        report = (home.root / "data" / "promotion" / f"{spec.key}.md").read_text()
        assert report.startswith(f"## {spec.name}: "), report[:200]
        assert report.split(":")[1].split()[0] in ("PROMOTE", "KEEP", "REFUSE"), report[:200]
        assert report in summary
        # Every model's hold-out is stored in MLflow, where every host finds it.
        assert holdout.stored(spec, client) is not None, spec.name
        champion, challenger = (alias_version(client, spec.name, a) for a in (CHAMPION, CHALLENGER))
        assert champion is not None or challenger == "1", (spec.name, champion, challenger)


def test_a_fresh_runner_judges_on_the_stored_hold_outs(
    trainer: tuple[Home, subprocess.CompletedProcess[str]],
    tracking_server: str,
    source: str,
    tmp_path: Path,
) -> None:
    """What the next night's runner does before its gate: it downloads each stored
    hold-out; none is frozen again."""
    first, _ = trainer
    client = MlflowClient(tracking_server, tracking_server)
    before = {spec.key: holdout.stored(spec, client) for spec in MODELS.values()}
    runner = Home(tmp_path, tracking_server, source, Path(first.env["PREPIQ_PARAMS_FILE"]))
    ingested = runner.run(PREPIQ, "ingest")
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    pulled = runner.run(PREPIQ, "holdout", "pull", "--model", "all")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    for spec in MODELS.values():
        found = before[spec.key]
        assert found is not None and holdout.stored(spec, client) == found  # not refrozen
        frozen = holdout.load(spec.key, tmp_path / "data")
        assert frozen.sha256 == found[1] and found[1][:12] in pulled.stdout


# -- home B: `prepiq serve`, two workers, an empty store -------------------------------------


class Server:
    """The serving home's `prepiq serve` and an HTTP client on it."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, headers=as_service(), timeout=30)

    def status(self) -> dict[str, Any]:
        answer = self.http.get("/api/v1/ml/models/status")
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    def workers_serving(self, key: str, version: str, workers: int = 2) -> float:
        """Seconds until `workers` distinct worker processes report serving `version` of
        `key` (each answer comes from whichever worker takes the connection)."""
        started_at = time.monotonic()
        switched: set[int] = set()
        seen: set[int] = set()
        while len(switched) < workers:
            assert time.monotonic() - started_at < SWITCH_TIMEOUT_S, (switched, seen)
            with httpx.Client(base_url=str(self.http.base_url), headers=as_service()) as fresh:
                status = fresh.get("/api/v1/ml/models/status").json()  # a new connection
            seen.add(status["process_id"])
            served = {m["key"]: m["version"] for m in status["models"]}
            if served.get(key) == version:
                switched.add(status["process_id"])
            else:
                switched.discard(status["process_id"])
            time.sleep(0.05)
        return time.monotonic() - started_at


@pytest.fixture(scope="module")
def server(
    trainer: tuple[Home, subprocess.CompletedProcess[str]],
    tracking_server: str,
    source: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, str]]]:
    """Home B's `prepiq serve` (two workers, an empty store), given the tracking URI and
    the source. Before it starts, a model the gate refused gets its first version made
    champion by hand, as an operator would, except the question ranker when it has none:
    it stays without one, and is not required. Yields the server and key -> champion."""
    first, done = trainer
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_server, tracking_server)
    champions: dict[str, str] = {}
    for key, spec in MODELS.items():
        champion = alias_version(client, spec.name, CHAMPION)
        if champion is None and key != "question-ranker":
            client.set_registered_model_alias(spec.name, CHAMPION, "1")
            champion = "1"
        if champion is not None:
            champions[key] = champion
    root = tmp_path_factory.mktemp("home-b")
    home = Home(root, tracking_server, source, Path(first.env["PREPIQ_PARAMS_FILE"]))
    port = free_port()
    env = {
        **home.env,
        **service_env(source),
        "PREPIQ_SERVING_WORKERS": "2",
        "PREPIQ_SERVING_CHAMPION_POLL_SECONDS": str(POLL_SECONDS),
        "PREPIQ_SERVING_REQUIRED_MODELS": ",".join(champions),
        "PREPIQ_SERVING_RATE_LIMIT": "100000/minute",
        "PREPIQ_SERVING_MATERIALISED_STUDENTS": "0",
    }
    assert not (root / "home" / "bentoml").exists()  # nothing but the registry to serve from
    base = f"http://127.0.0.1:{port}"
    command: list[str | Path] = [PREPIQ, "serve", "--host", "127.0.0.1", "--port", str(port)]
    started_at = time.monotonic()
    with started(command, env, root / "serve.log", f"{base}/readyz"):
        print(f"empty store to /readyz 200: {time.monotonic() - started_at:.1f} s")
        yield Server(base), champions


def test_an_empty_store_comes_up_serving_every_champion(
    server: tuple[Server, dict[str, str]], tracking_server: str
) -> None:
    served, champions = server
    ready = served.http.get("/readyz", headers={})
    assert ready.status_code == 200, ready.text
    states = {m["key"]: m for m in ready.json()["models"]}
    for key in MODELS:
        if key in champions:
            assert states[key]["state"] == "serving" and states[key]["version"] == champions[key]
        else:
            assert states[key]["state"] == "no_champion"
    status = served.status()
    by_key = {m["key"]: m for m in status["models"]}
    client = MlflowClient(tracking_server, tracking_server)
    for key, version in champions.items():
        model = by_key[key]
        assert model["version"] == version and "champion" in model["aliases"]
        run = client.get_run(model["run_id"])  # lineage read from the server
        assert model["data_version"] == run.data.tags["data_version"]
    if "question-ranker" not in champions:  # the gate refused it: its routes say so
        answer = served.http.post("/api/v1/ml/rank/questions", json={"subject_id": 1})
        assert answer.status_code == 503, answer.text
        assert "question-ranker" in answer.json()["error"], answer.text
    assert served.http.get("/livez", headers={}).status_code == 200


def test_an_alias_change_and_a_rollback_reach_both_workers_with_no_failed_request(
    server: tuple[Server, dict[str, str]],
    trainer: tuple[Home, subprocess.CompletedProcess[str]],
    tracking_server: str,
    source: str,
) -> None:
    served, champions = server
    first, _ = trainer
    client = MlflowClient(tracking_server, tracking_server)
    name = MODELS[FOCUS].name
    old = champions[FOCUS]
    trained = first.run(PREPIQ, "train", "--models", FOCUS, "--no-ingest", "--trials", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    new = alias_version(client, name, CHALLENGER)
    assert new is not None and new != old
    with migrated_engine(source).connect() as conn:
        student = str(conn.exec_driver_sql("SELECT id FROM users ORDER BY id LIMIT 1").scalar())
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=str(served.http.base_url), headers=as_service()) as http:
            while not stop.is_set():
                answer = http.post("/api/v1/ml/predict/focus-areas", json={"user_id": student})
                ok = answer.status_code == 200
                answers.append(
                    (answer.status_code, answer.json()["model"]["version"] if ok else None)
                )

    assert served.workers_serving(FOCUS, old) >= 0  # both workers seen on the old version
    worker = threading.Thread(target=load, name="focus-load")
    worker.start()
    try:
        # What a promotion ends with, done by hand: `previous` := old, `champion` := new.
        client.set_registered_model_alias(name, PREVIOUS, old)
        client.set_registered_model_alias(name, CHAMPION, new)
        moved_at = datetime.now(UTC)
        switch = served.workers_serving(FOCUS, new)
        rolled = first.run(PREPIQ, "rollback", "--model", FOCUS)
        assert rolled.returncode == 0, rolled.stderr[-3000:]
        back = served.workers_serving(FOCUS, old)
    finally:
        stop.set()
        worker.join(timeout=60)
    print(
        f"alias change to both workers serving v{new}: {switch:.1f} s; rollback to v{old}: "
        f"{back:.1f} s (poll {POLL_SECONDS:g} s, moved at {moved_at:%H:%M:%S})"
    )
    assert [a for a in answers if a[0] != 200] == []
    versions = {v for _, v in answers}
    assert versions == {old, new}, versions
    assert alias_version(client, name, CHAMPION) == old
    # An admin reload in one worker, once every worker follows: nothing left to change.
    reload = served.http.post("/api/v1/ml/models/reload", headers=as_admin())
    assert reload.status_code == 200 and reload.json() == {"reloaded": {}}, reload.text
