"""The serving API beyond the in-process happy paths (tests/serving/test_service.py), on the same
small real training run: against a real `bentoml serve` process (every route over HTTP,
then SIGTERM: the shutdown flush writes every prediction), Schemathesis against the
service's own `/docs.json`, a reload under load, and which store entry is the champion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from core.config import get_settings
from core.exceptions import ConfigError
from core.net import free_port
from registry import model_store
from tests.serving_support import (
    PROCESS_TEST_ADMIN_KEY,
    PROCESS_TEST_KEY,
    SCHEMA_TEST_KEY,
    ServingRun,
    admin_user,
    aliases_restored,
    as_admin,
    as_service,
    as_user,
    assert_error,
    fetch_to_store,
    make_champion,
    serving_process,
    stored_predictions,
    train,
)
from training.models import MODELS

FOCUS = "focus-area"
SHUTDOWN_TIMEOUT_S = 60.0
# The in-process tests' callers: keys no other module uses, so the session's one in-process
# app (one limiter) gives them rate windows of their own, whatever module ran before.
# (A real `bentoml serve` counts in its own memory: those tests call with the shared keys.)
IN_PROCESS_SERVICE = as_service(PROCESS_TEST_KEY)
IN_PROCESS_ADMIN = as_admin(PROCESS_TEST_ADMIN_KEY)


# -- a real `bentoml serve` process --------------------------------------------------------


@pytest.fixture
def server(served_models: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `bentoml serve` with the tests' settings (`serving_process`)."""
    with serving_process(served_models, tmp_path) as started:
        yield started


def test_every_route_over_http_and_a_sigterm_loses_no_prediction(
    server: tuple[str, subprocess.Popen[bytes]], served_models: str, student: str
) -> None:
    base, process = server
    expected: Counter[str] = Counter()  # request id -> predictions it makes
    with httpx.Client(base_url=base, headers=as_service(), timeout=30) as http:

        def call(method: str, route: str, predictions: int, **kwargs: Any) -> Any:
            request_id = f"proc-{uuid.uuid4().hex[:12]}"
            answer = http.request(method, route, headers={"X-Request-ID": request_id}, **kwargs)
            assert answer.status_code == 200, (route, answer.text)
            assert answer.headers["x-request-id"] == request_id
            if predictions:
                expected[request_id] = predictions
            return answer.json()

        progress = call("POST", "/api/v1/ml/predict/progress", 1, json={"user_id": student})
        assert progress["forecasts"] and progress["model"]["version"] == "1"
        focus = call("POST", "/api/v1/ml/predict/focus-areas", 1, json={"user_id": student})
        assert focus["focus_areas"]
        recommended = call(
            "POST", "/api/v1/ml/recommend/topics", 1, json={"user_id": student, "top_k": 3}
        )
        assert 0 < len(recommended["recommendations"]) <= 3
        subject = recommended["recommendations"][0]["subject_id"]
        ranked = call(
            "POST", "/api/v1/ml/rank/questions", 1, json={"subject_id": subject, "top_k": 5}
        )
        assert len(ranked["questions"]) == 5
        # A dashboard asks three models; the progress and recommendation views one each.
        for view, predictions in (("dashboard", 3), ("progress", 1), ("recommendations", 1)):
            assert call("GET", f"/api/v1/users/{student}/{view}", predictions)["user_id"] == student
        stored = call("GET", f"/api/v1/users/{student}/predictions", 0)
        assert stored["user_id"] == student
        status = call("GET", "/api/v1/ml/models/status", 0)
        assert status["ready"] is True and len(status["models"]) == len(MODELS)
        assert sum(m["requests"] for m in status["models"]) == sum(expected.values())
        store = status["materialised_inputs"]  # on by default (serving.feature_store)
        assert store is not None and store["hits"] + store["misses"] >= 5
        # Each prediction from a stored input computed its output or reused the kept one.
        assert store["outputs_computed"] + store["outputs_reused"] == store["hits"]
        reload = http.post("/api/v1/ml/models/reload", headers=as_admin())
        assert reload.status_code == 200 and reload.json() == {"reloaded": {}}, reload.text
        for open_route in ("/livez", "/readyz", "/metrics", "/docs.json"):
            assert http.get(open_route, headers={}).status_code == 200, open_route
        missing = http.post("/api/v1/ml/predict/focus-areas", json={"user_id": "nobody"})
        assert missing.status_code == 404
        scraped = prometheus_samples(http.get("/metrics", headers={}).text)

    # The service's own metrics on /metrics, per model (BentoML's are per route).
    answered = by_model(scraped, "prepiq_model_requests_total")
    assert set(answered) == set(MODELS)
    assert sum(answered.values()) == sum(expected.values())
    assert by_model(scraped, "prepiq_model_latency_seconds_count") == answered
    assert by_model(scraped, "prepiq_model_errors_total") == {"focus-area": 1}
    assert (
        "prepiq_model_errors_total",
        frozenset({("model", "focus-area"), ("status", "404")}),
    ) in scraped
    served = {
        dict(labels)["model"]: dict(labels)["version"]
        for (name, labels), value in scraped.items()
        if name == "prepiq_model_served_version" and value == 1
    }
    assert served == dict.fromkeys(MODELS, "1")
    # ...and the database statements the service ran (core.metrics, the slow-query watch).
    timed_queries = [
        value
        for (name, _), value in scraped.items()
        if name == "prepiq_db_query_duration_seconds_count"
    ]
    assert sum(timed_queries) > 0
    # Every prediction for a user_id looks in the materialised store first, hit or miss.
    lookups: Counter[str] = Counter()
    for (name, labels), value in scraped.items():
        if name == "prepiq_materialised_lookups_total":
            lookups[dict(labels)["result"]] += int(value)
    assert set(lookups) <= {"hit", "miss"}
    # The status counted them before the request for an unknown student (one more miss).
    assert lookups.total() == store["hits"] + store["misses"] + 1

    ids = list(expected)
    assert stored_predictions(served_models, ids) == []  # nothing written before shutdown

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    rows = stored_predictions(served_models, ids)
    assert Counter(r["request_id"] for r in rows) == expected
    assert {r["user_id"] for r in rows} == {student, None}  # the ranking is for no student
    assert {r["model_name"] for r in rows} == {spec.name for spec in MODELS.values()}


Sample = tuple[str, frozenset[tuple[str, str]]]


def prometheus_samples(text: str) -> dict[Sample, float]:
    """(metric name, labels) -> value of every sample of a /metrics answer, parsed by
    prometheus_client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_model(samples: dict[Sample, float], name: str) -> dict[str, float]:
    """Model key -> summed value of the samples of metric `name`."""
    found: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            model = dict(labels)["model"]
            found[model] = found.get(model, 0.0) + value
    return found


# -- Schemathesis against the service's own /docs.json -----------------------------------


@pytest.fixture(scope="module")
def api_schema(serving_app: Any) -> Iterator[Any]:
    """The OpenAPI document the in-process service serves. Schemathesis runs the app's
    lifespan itself (until exit): it is ended here so the next user can start its own."""
    yield schemathesis.openapi.from_asgi("/docs.json", serving_app)
    shutdown_lifespans()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 5  # x ~10 protected routes: under the caller's 60/minute rate limit
# Each run calls as a caller of its own, so neither eats the other's rate-limit window.
SCHEMA_CALLERS = {
    "service-key": lambda: {"X-API-Key": SCHEMA_TEST_KEY},
    "user-token": lambda: as_user(str(uuid.uuid4())),
}


def schema_failures(api_schema: Any, headers: dict[str, str]) -> tuple[set[str], Counter[int]]:
    """Run every in-process operation of /docs.json, with valid and invalid generated
    inputs (seeded: the same cases each run), calling with `headers`; returns each
    distinct check failure (operation and failure title) and the statuses answered.

    (Schemathesis' own `from_fixture(...).parametrize()` cannot run on pytest 9.2: it
    renames the node id attribute it sets, so each operation runs here as a Hypothesis
    test of its own. `/metrics` needs the Prometheus multiprocess folder `bentoml serve`
    sets up: it is checked against the real process above.)"""
    from schemathesis.core.failures import Failure, FailureGroup

    in_process = api_schema.exclude(path="/metrics")
    operations = [result.ok() for result in in_process.get_all_operations()]
    assert len(operations) >= 12
    failures: set[str] = set()
    statuses: Counter[int] = Counter()
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            try:
                answer = case.call_and_validate(headers=headers, checks=CHECKS)
            except FailureGroup as group:  # several checks failed on one response
                failures.update(f"{case.operation.label}: {f.title}" for f in group.exceptions)
            except Failure as failure:
                failures.add(f"{case.operation.label}: {failure.title}")
            else:
                statuses[answer.status_code] += 1

        check()
    return failures, statuses


@pytest.mark.parametrize("caller", list(SCHEMA_CALLERS))
def test_responses_conform_to_the_published_schema(api_schema: Any, caller: str) -> None:
    """Every operation of /docs.json, with valid and invalid generated inputs, once with a
    service key and once with a user token: no 5xx, and every status, content type,
    header and body as declared."""
    failures, statuses = schema_failures(api_schema, SCHEMA_CALLERS[caller]())
    print(f"schemathesis ({caller}): {len(failures)} distinct failures", sorted(failures))
    print(f"schemathesis ({caller}) responses by status:", dict(statuses))
    assert sorted(failures) == []
    # The generated requests reached the models and the validation, not only the limits.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
    # (most generated user ids are unknown to a service: 404; another user's to a student: 403)
    assert statuses[404 if caller == "service-key" else 403] > 0, statuses
    assert statuses[429] == 0, statuses


# Schemathesis' own runner against the real process, as the issue ran it: its coverage
# phase sends what the fuzzer does not (boundary values, nulls, unexpected media types,
# missing or malformed headers), the fuzzing phase seeded and bounded.
CLI_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)
CLI_EXAMPLES = 10


def schemathesis_cli(base: str, header: str, report: Path) -> tuple[int, list[str], str]:
    """`schemathesis run` on `base`/docs.json calling with `header`: its exit code, the
    distinct failures it reported (operation and failure title) and its output's tail."""
    import json

    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/docs.json",
        "--checks", CLI_CHECKS, "--header", header,
        "--phases", "examples,coverage,fuzzing", "--max-examples", str(CLI_EXAMPLES),
        "--seed", "15", "--generation-deterministic", "--no-shrink", "--workers", "1",
        "--continue-on-failure", "--request-timeout", "30", "--no-color",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]  # fmt: skip
    # In the test's own folder: it writes a cache folder (.schemathesis/) where it runs,
    # which would otherwise land in the repository and outlive the run.
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=report.parent
    )
    assert report.exists(), (done.stdout + done.stderr)[-3000:]
    failures: set[str] = set()
    for line in report.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if scenario is None:
            continue
        recorder = scenario["recorder"]
        for checks in recorder.get("checks", {}).values():
            for check in checks:
                if check["status"] == "failure":
                    title = (check.get("failure_info") or {}).get("failure", {}).get("title")
                    failures.add(f"{recorder['label']}: {check['name']}: {title}")
    return done.returncode, sorted(failures), (done.stdout + done.stderr)[-6000:]


def test_schemathesis_run_on_the_real_process_finds_no_failure(
    served_models: str, tmp_path: Path
) -> None:
    """`schemathesis run` against a real `prepiq serve`, with a service key and with a
    user token: 0 failures of every check. The limits are raised so that the run is not
    throttled (the limits have tests of their own)."""
    results = {}
    with serving_process(
        served_models,
        tmp_path,
        PREPIQ_SERVING_RATE_LIMIT="100000/minute",
        PREPIQ_SERVING_ANONYMOUS_RATE_LIMIT="100000/minute",
    ) as (base, _):
        for caller, header in (
            ("service-key", f"X-API-Key: {SCHEMA_TEST_KEY}"),
            ("user-token", f"Authorization: {as_user(str(uuid.uuid4()))['Authorization']}"),
        ):
            results[caller] = schemathesis_cli(base, header, tmp_path / f"{caller}.ndjson")
    for caller, (code, failures, output) in results.items():
        print(f"schemathesis run ({caller}): exit {code}, {len(failures)} distinct failures")
        print("\n".join(failures) or output[-1500:])
    assert {caller: failures for caller, (_, failures, _) in results.items()} == {
        "service-key": [],
        "user-token": [],
    }, {caller: output for caller, (_, _, output) in results.items()}
    assert {caller: code for caller, (code, _, _) in results.items()} == {
        "service-key": 0,
        "user-token": 0,
    }


def test_docs_declare_the_one_error_shape_for_every_protected_route(api_schema: Any) -> None:
    document = api_schema.raw_schema
    assert "ErrorBody" in document["components"]["schemas"]
    protected = {p: item for p, item in document["paths"].items() if p.startswith("/api/")}
    assert len(protected) >= 9
    for path, item in protected.items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "404", "413", "415", "429", "504"):
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path, status)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
            assert responses["429"]["headers"]["Retry-After"]["required"] is True


def test_docs_state_the_one_of_rule_and_the_nulls_answered(api_schema: Any) -> None:
    """Each request taking a `user_id` or the inputs says "exactly one" as `oneOf`, and
    each API's bodies are its model's component schema, nullable fields kept (BentoML's
    inlined copies dropped both)."""
    document = api_schema.raw_schema
    components = document["components"]["schemas"]
    for path, inputs in (
        ("/api/v1/ml/predict/progress", "inputs"),
        ("/api/v1/ml/predict/focus-areas", "topics"),
        ("/api/v1/ml/recommend/topics", "inputs"),
    ):
        operation = document["paths"][path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        request = components[ref.rsplit("/", 1)[1]]
        assert [branch["required"] for branch in request["oneOf"]] == [["user_id"], [inputs]]
        assert {"type": "null"} in request["properties"]["user_id"]["anyOf"]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        answered = components[ok.rsplit("/", 1)[1]]
        assert {"type": "null"} in answered["properties"]["user_id"]["anyOf"], path


# -- a new champion picked up under load ---------------------------------------------------


@pytest.fixture(scope="module")
def second_focus_version(serving_run: ServingRun, service: Any) -> Iterator[str]:
    """A second focus-area version, trained on the run's snapshot (registered, marked
    challenger, not yet in the serving store). Training it moves `challenger` off v1: the
    registry's aliases are put back as they were after this module."""
    with aliases_restored() as client:
        train(serving_run, [FOCUS], ingest=False)
        version = client.get_model_version_by_alias(MODELS[FOCUS].name, "challenger")
        assert version.version != "1"
        yield str(version.version)


def test_a_reload_under_load_serves_the_new_champion_without_a_failed_request(
    serving_app: Any, student: str, second_focus_version: str
) -> None:
    name = MODELS[FOCUS].name
    answers: list[tuple[int, str | None]] = []
    answered_at: list[float] = []
    stop = threading.Event()

    with aliases_restored() as client, TestClient(serving_app) as http:

        def load() -> None:
            while not stop.is_set():
                answer = http.post(
                    "/api/v1/ml/predict/focus-areas",
                    json={"user_id": student},
                    headers=admin_user(),
                )
                version = answer.json()["model"]["version"] if answer.status_code == 200 else None
                answers.append((answer.status_code, version))
                answered_at.append(time.perf_counter())

        def wait_for(count: int, version: str) -> None:
            deadline = time.monotonic() + 60
            while sum(1 for _, v in answers if v == version) < count:
                assert time.monotonic() < deadline, answers[-5:]
                time.sleep(0.05)

        before = http.get("/api/v1/ml/models/status", headers=IN_PROCESS_SERVICE).json()
        assert {m["key"]: m["version"] for m in before["models"]}[FOCUS] == "1"
        worker = threading.Thread(target=load, name="focus-load")
        worker.start()
        try:
            wait_for(5, "1")
            # What a promotion does: move the alias. The reload fetches the new champion
            # from the registry into the store and swaps it in.
            make_champion(FOCUS, second_focus_version)
            reload_started = time.perf_counter()
            reload = http.post("/api/v1/ml/models/reload", headers=IN_PROCESS_ADMIN)
            reload_ended = time.perf_counter()
            assert reload.status_code == 200, reload.text
            tag = reload.json()["reloaded"][FOCUS]
            assert list(reload.json()["reloaded"]) == [FOCUS]
            wait_for(5, second_focus_version)
        finally:
            stop.set()
            worker.join(timeout=60)

        status = http.get("/api/v1/ml/models/status", headers=IN_PROCESS_SERVICE).json()
    assert [code for code, _ in answers if code != 200] == []
    # Requests were answered on both sides of the reload (how many land inside the reload
    # itself depends on the machine's speed, so it is not asserted).
    before_reload = sum(1 for t in answered_at if t < reload_started)
    after_reload = sum(1 for t in answered_at if t > reload_ended)
    assert before_reload >= 1 and after_reload >= 1, (before_reload, after_reload)
    versions = [v for _, v in answers]
    switched = versions.index(second_focus_version)
    assert set(versions[:switched]) == {"1"} and set(versions[switched:]) == {second_focus_version}
    focus = {m["key"]: m for m in status["models"]}[FOCUS]
    assert focus["version"] == second_focus_version and focus["bento_tag"] == tag
    assert "champion" in focus["aliases"]
    (entry,) = model_store.entries(FOCUS, second_focus_version)
    assert str(entry.tag) == tag and entry.info.labels["mlflow_name"] == name
    assert model_store.intact(entry)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


# -- per-model readiness, failed reloads ----------------------------------------------------


def unloadable_version(client: MlflowClient, key: str, tmp_path: Path) -> str:
    """A registered version of `key` whose artifacts do not exist (a broken upload)."""
    name = MODELS[key].name
    run_id = client.get_model_version(name, "1").run_id
    missing = tmp_path / "never-uploaded" / "model"
    return str(client.create_model_version(name, str(missing), run_id=run_id).version)


def test_each_model_is_ready_on_its_own_and_a_failed_reload_says_so(
    serving_app: Any, student: str, tmp_path: Path
) -> None:
    """A model with no champion answers 503 naming it while the others serve; /readyz lists
    each model's state; a reload whose champion cannot be fetched is a 503 naming the
    model and why, and the model keeps the version it served."""
    ranker = MODELS["question-ranker"].name
    with aliases_restored() as client, TestClient(serving_app) as http:
        client.delete_registered_model_alias(ranker, "champion")
        http.post("/api/v1/ml/models/reload", headers=IN_PROCESS_ADMIN)  # the ranker stays served
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        states = {m["key"]: m for m in ready.json()["models"]}
        assert states["question-ranker"]["state"] == "serving"
        assert "no champion in the registry" in states["question-ranker"]["reason"]

    with aliases_restored() as client:
        client.delete_registered_model_alias(ranker, "champion")
        with TestClient(serving_app) as http:  # a start with no ranker champion
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["ready"] is False and body["required"] == list(MODELS)
            states = {m["key"]: m for m in body["models"]}
            assert states["question-ranker"]["state"] == "no_champion"
            assert states["question-ranker"]["version"] is None
            assert {states[k]["state"] for k in MODELS if k != "question-ranker"} == {"serving"}
            ranked = http.post(
                "/api/v1/ml/rank/questions", json={"subject_id": 1}, headers=IN_PROCESS_SERVICE
            )
            assert_error(ranked, 503)
            assert "question-ranker" in ranked.json()["error"]
            assert "no champion" in ranked.json()["error"]
            assert ranked.headers["retry-after"]
            focus = http.post(
                "/api/v1/ml/predict/focus-areas",
                json={"user_id": student},
                headers=IN_PROCESS_SERVICE,
            )
            assert focus.status_code == 200, focus.text
            status = http.get("/api/v1/ml/models/status", headers=IN_PROCESS_SERVICE).json()
            assert status["ready"] is False and status["process_id"] == os.getpid()
            assert "question-ranker" not in {m["key"] for m in status["models"]}

            # The champion comes back: a reload serves it, and the service is ready.
            client.set_registered_model_alias(ranker, "champion", "1")
            reload = http.post("/api/v1/ml/models/reload", headers=IN_PROCESS_ADMIN)
            assert reload.status_code == 200, reload.text
            assert list(reload.json()["reloaded"]) == ["question-ranker"]
            assert http.get("/readyz").status_code == 200

            # A champion whose artifacts cannot be had: 503 naming it, v1 still serves.
            broken = unloadable_version(client, FOCUS, tmp_path)
            client.set_registered_model_alias(MODELS[FOCUS].name, "champion", broken)
            failed = http.post("/api/v1/ml/models/reload", headers=IN_PROCESS_ADMIN)
            assert_error(failed, 503)
            assert failed.json()["code"] == "reload_failed"
            assert f"{FOCUS}: champion v{broken}" in failed.json()["error"]
            focus = http.post(
                "/api/v1/ml/predict/focus-areas",
                json={"user_id": student},
                headers=IN_PROCESS_SERVICE,
            )
            assert focus.status_code == 200 and focus.json()["model"]["version"] == "1"
            ready = http.get("/readyz").json()
            state = {m["key"]: m for m in ready["models"]}[FOCUS]
            assert state["state"] == "serving" and state["version"] == "1"
            assert state["champion"] == broken and f"champion v{broken}" in state["reason"]


# -- which store entry is served -----------------------------------------------------------


def damage(entry: Any) -> tuple[Path, bytes]:
    """Append a byte to the entry's pickled model; returns the file and its bytes."""
    path = Path(entry.path_of(model_store.MODEL_FOLDER)) / "python_model.pkl"
    original = path.read_bytes()
    path.write_bytes(original + b"\0")
    return path, original


def test_serving_takes_an_intact_entry_of_the_champion_and_falls_back_when_it_must(
    second_focus_version: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serving.models import ModelSet

    tracking_uri = get_settings().resolved_tracking_uri
    name = MODELS[FOCUS].name
    with aliases_restored() as client:
        # A newer entry that is not the champion (fetched, alias never moved) is not served.
        newest = fetch_to_store(FOCUS, second_focus_version)
        models = ModelSet(tracking_uri)
        models.refresh()
        served = models.get(FOCUS)
        assert models.ready and served is not None
        assert served.version == "1" and served.bento_tag != newest
        assert served.chosen_as == "champion" and "champion" in served.aliases

        # The champion's entry damaged: skipped, and fetched again from the registry.
        (first,) = model_store.entries(FOCUS, "1")
        path, original = damage(first)
        models = ModelSet(tracking_uri)
        models.refresh()
        refetched = models.get(FOCUS)
        assert refetched is not None and refetched.version == "1"
        assert refetched.bento_tag != str(first.tag)
        assert "store entry damaged: skipped" in caplog.text
        # Two entries of v1, the newer damaged: the older intact one serves, even with no
        # registry to fetch from.
        path.write_bytes(original)
        (newer, older) = model_store.entries(FOCUS, "1")
        damage(newer)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        dead = f"http://127.0.0.1:{free_port()}"
        offline = ModelSet(dead)
        assert offline.refresh().registry == "remembered"
        served = offline.get(FOCUS)
        assert served is not None and served.bento_tag == str(older.tag)
        assert "following the champions last read" in caplog.text
        import bentoml

        bentoml.models.delete(newer.tag)

        # The champion cannot be fetched: a start serves the previous champion, said so.
        broken = unloadable_version(client, FOCUS, tmp_path)
        client.set_registered_model_alias(name, "previous", "1")
        client.set_registered_model_alias(name, "champion", broken)
        models = ModelSet(tracking_uri)
        result = models.refresh()
        served = models.get(FOCUS)
        assert served is not None and served.version == "1" and served.chosen_as == "previous"
        assert result.failed == {} and result.served[FOCUS] == served.bento_tag
        state = models.availability(FOCUS)
        assert state.state == "serving" and state.champion == broken
        assert state.reason is not None and f"champion v{broken}" in state.reason
        assert "serving a fallback" in caplog.text
        # ... and with no previous either, the model is not served; the others are, and
        # the service is ready when the model is not required.
        client.delete_registered_model_alias(name, "previous")
        models = ModelSet(tracking_uri, required=["progress-forecaster", "topic-recommender"])
        assert FOCUS in models.refresh().failed
        assert models.get(FOCUS) is None and models.availability(FOCUS).state == "failed"
        assert models.get("topic-recommender") is not None and models.ready

    # Never read the registry on this host and cannot now: the newest intact entries.
    (model_store.store_home() / model_store.ALIASES_FILE).unlink()
    offline = ModelSet(dead)
    assert offline.refresh().registry == "unreachable"
    served = offline.get(FOCUS)
    assert served is not None and served.bento_tag == newest
    assert served.chosen_as == "newest" and served.main_metric_value is None


def test_an_unknown_required_model_is_refused_by_name() -> None:
    from serving.models import ModelSet

    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['focus'\]"):
        ModelSet(None, required=["focus", "question-ranker"])
