"""The serving API in-process (`Service.to_asgi()` with Starlette's TestClient), on the
four models of one small real training run imported into the BentoML store as promotion
does: every route's happy path, authentication and authorisation, the rate limit, bad
input answered 4xx naming the field in the one error shape, and the prediction log."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from features.focus import FEATURE_COLUMNS
from features.schema import ModelPrediction
from tests.serving_support import (
    BAD_INPUT_KEY,
    MAX_BODY,
    PREDICTION_LOG_KEY,
    RATE_LIMIT,
    SERVICE_TEST_ADMIN_KEY,
    SERVICE_TEST_KEY,
    as_admin,
    as_service,
    as_user,
    assert_error,
    progress_day,
    token,
)

# This module's callers have keys no other module uses: the session has one in-process
# app, whose limiter counts every module's requests, so their per-minute windows are this
# module's alone, whatever ran before it. The body-input tests call as the admin key, so
# their requests do not eat the service key's window that the other tests here share.
SERVICE = as_service(SERVICE_TEST_KEY)
ADMIN = as_admin(SERVICE_TEST_ADMIN_KEY)
BODY_CALLER = ADMIN
# The bad-input tests send 23 requests: a key of their own leaves SERVICE's window room.
BAD_INPUT = as_service(BAD_INPUT_KEY)
# A client address of this module's own: its 401s count against no other module's
# anonymous limit, nor theirs against its.
CLIENT_ADDRESS = ("10.3.0.1", 50000)


@pytest.fixture(scope="module")
def client(serving_app: Any) -> Iterator[TestClient]:
    with TestClient(serving_app, client=CLIENT_ADDRESS) as test_client:
        yield test_client


# -- happy paths -------------------------------------------------------------------------


def test_every_route_answers_for_the_student_with_their_own_token(
    client: TestClient, student: str
) -> None:
    me = as_user(student)
    progress = client.post("/api/v1/ml/predict/progress", json={"user_id": student}, headers=me)
    assert progress.status_code == 200, progress.text
    forecast = progress.json()
    assert [f["horizon_days"] for f in forecast["forecasts"]] == [30, 60]  # small params
    for f in forecast["forecasts"]:
        assert f["low_percent"] <= f["completion_percent"] <= f["high_percent"] <= 100
        assert f["completion_percent"] >= forecast["completion_now"]
    assert forecast["model"]["name"] == "prepiq-progress-forecaster"

    focus = client.post("/api/v1/ml/predict/focus-areas", json={"user_id": student}, headers=me)
    assert focus.status_code == 200, focus.text
    areas = focus.json()["focus_areas"]
    assert areas and [a["priority"] for a in areas] == sorted(a["priority"] for a in areas)
    assert all(0 <= a["weak_probability"] <= 1 and a["topic_name"] for a in areas)

    recommended = client.post(
        "/api/v1/ml/recommend/topics", json={"user_id": student, "top_k": 3}, headers=me
    )
    assert recommended.status_code == 200, recommended.text
    topics = recommended.json()["recommendations"]
    assert 0 < len(topics) <= 3 and [t["rank"] for t in topics] == list(range(1, len(topics) + 1))
    assert all(t["reason"] for t in topics)

    subject = topics[0]["subject_id"]
    ranked = client.post(
        "/api/v1/ml/rank/questions", json={"subject_id": subject, "top_k": 20}, headers=me
    )
    assert ranked.status_code == 200, ranked.text
    questions = ranked.json()["questions"]
    assert len(questions) == 20 and [q["rank"] for q in questions] == list(range(1, 21))
    assert [q["score"] for q in questions] == sorted((q["score"] for q in questions), reverse=True)

    for view in ("dashboard", "progress", "recommendations", "predictions"):
        answer = client.get(f"/api/v1/users/{student}/{view}", headers=me)
        assert answer.status_code == 200, (view, answer.text)
        assert answer.json()["user_id"] == student
    dashboard = client.get(f"/api/v1/users/{student}/dashboard", headers=me).json()
    assert dashboard["progress"]["forecasts"] and len(dashboard["recommendations"]) <= 5
    history = client.get(f"/api/v1/users/{student}/progress", headers=me).json()["history"]
    assert history == sorted(history, key=lambda r: r["recorded_on"])


def test_ranking_given_texts_keeps_a_known_questions_history(
    client: TestClient, student: str
) -> None:
    subject_questions = client.post(
        "/api/v1/ml/rank/questions", json={"subject_id": 1, "top_k": 1}, headers=SERVICE
    ).json()["questions"]
    known = subject_questions[0]
    body = {
        "subject_id": 1,
        "questions": [
            {"text": known["text"], "topic_id": known["topic_id"]},  # a past question
            {"text": "A question never set before about nothing", "topic_id": known["topic_id"]},
        ],
    }
    answer = client.post("/api/v1/ml/rank/questions", json=body, headers=SERVICE)
    assert answer.status_code == 200, answer.text
    ranked = {q["text"]: q for q in answer.json()["questions"]}
    again = ranked[known["text"]]
    assert again["question_id"] == known["question_id"]
    assert again["repeat_probability"] == pytest.approx(known["repeat_probability"], rel=1e-6)
    new = ranked["A question never set before about nothing"]
    assert new["question_id"] is None and new["rank"] == 2


def test_focus_areas_from_sent_inputs_match_those_built_from_the_source(
    client: TestClient, student: str, served_models: str
) -> None:
    from core.database import get_engine
    from serving.online_features import OnlineFeatures

    built = OnlineFeatures(get_engine(served_models), 600).focus_inputs(student)
    topics = built[["topic_id", *FEATURE_COLUMNS]].to_dict("records")
    sent = client.post("/api/v1/ml/predict/focus-areas", json={"topics": topics}, headers=SERVICE)
    by_id = client.post(
        "/api/v1/ml/predict/focus-areas", json={"user_id": student}, headers=SERVICE
    )
    assert sent.status_code == by_id.status_code == 200, sent.text
    assert sent.json()["focus_areas"] == by_id.json()["focus_areas"]
    assert sent.json()["user_id"] is None


def test_progress_from_sent_days_matches_the_forecast_from_the_source(
    client: TestClient, student: str, served_models: str
) -> None:
    from core.database import get_engine
    from serving.online_features import OnlineFeatures

    built = OnlineFeatures(get_engine(served_models), 600).progress_inputs(student, 30)
    days = [
        {
            "day": str(r["day"]),
            "study_minutes": r["study_minutes"],
            "logins": r["logins"],
            "streak_days": r["streak_days"],
            "test_score": r["test_score"] if r["had_test"] else None,
            "completion_percent": r["completion_percent"],
        }
        for r in built.to_dict("records")
    ]
    last = built.iloc[-1]
    inputs = {
        "days": days,
        "days_to_exam": last["days_to_exam"],
        "days_since_join": last["days_since_join"],
        "topics_total": last["topics_total"],
    }
    sent = client.post("/api/v1/ml/predict/progress", json={"inputs": inputs}, headers=BODY_CALLER)
    by_id = client.post(
        "/api/v1/ml/predict/progress", json={"user_id": student}, headers=BODY_CALLER
    )
    assert sent.status_code == by_id.status_code == 200, sent.text
    assert sent.json()["forecasts"] == by_id.json()["forecasts"]
    assert sent.json()["user_id"] is None
    twice = {**inputs, "days": [days[0], days[0]]}
    assert_error(
        client.post("/api/v1/ml/predict/progress", json={"inputs": twice}, headers=BODY_CALLER),
        400,
        "inputs.days.1.day",
    )


def test_recommendations_from_sent_inputs_match_those_from_the_source(
    client: TestClient, student: str, served_models: str
) -> None:
    from core.database import get_engine
    from features import recommend
    from serving.online_features import RECOMMEND_STUDENT_TABLES, OnlineFeatures

    online = OnlineFeatures(get_engine(served_models), 600)
    frames = online.student_rows(student, RECOMMEND_STUDENT_TABLES)
    context = recommend.student_context(frames, online.now())
    practice = recommend.interactions(frames, online.now()).astype(object)
    inputs = {
        "subject_ids": sorted(int(s) for s in context["subject_id"].unique()),
        "practice": practice.drop(columns="user_id")
        .where(practice.notna(), None)
        .to_dict("records"),
        "interested_topic_ids": [
            int(t) for t in context.loc[context["interested"] > 0, "topic_id"]
        ],
        "preferred_difficulty": context["preferred_difficulty"].iloc[0],
    }
    assert inputs["practice"], "the test student has practised"
    sent = client.post(
        "/api/v1/ml/recommend/topics", json={"inputs": inputs, "top_k": 10}, headers=BODY_CALLER
    )
    by_id = client.post(
        "/api/v1/ml/recommend/topics", json={"user_id": student, "top_k": 10}, headers=BODY_CALLER
    )
    assert sent.status_code == by_id.status_code == 200, sent.text
    assert sent.json()["user_id"] is None
    mine, theirs = sent.json()["recommendations"], by_id.json()["recommendations"]
    assert [r["topic_id"] for r in mine] == [r["topic_id"] for r in theirs]
    # Ages differ by the seconds between the two builds: confidences agree closely.
    assert [r["confidence"] for r in mine] == pytest.approx(
        [r["confidence"] for r in theirs], abs=1e-3
    )
    first = inputs["practice"][0]
    for body, status, field in (
        ({**inputs, "subject_ids": [999]}, 404, "inputs.subject_ids.0"),
        ({**inputs, "practice": [first, first]}, 400, "inputs.practice.1.topic_id"),
        ({**inputs, "interested_topic_ids": [99_999]}, 400, "inputs.interested_topic_ids.0"),
        ({**inputs, "preferred_difficulty": "brutal"}, 400, "inputs.preferred_difficulty"),
    ):
        answer = client.post(
            "/api/v1/ml/recommend/topics", json={"inputs": body}, headers=BODY_CALLER
        )
        assert_error(answer, status, field)


def test_models_status_reports_each_model_and_its_traffic(client: TestClient, student: str) -> None:
    client.post("/api/v1/ml/predict/focus-areas", json={"user_id": student}, headers=SERVICE)
    assert client.get("/readyz").status_code == 200
    status = client.get("/api/v1/ml/models/status", headers=SERVICE)
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["ready"] is True
    models = {m["key"]: m for m in body["models"]}
    assert set(models) == {
        "progress-forecaster",
        "topic-recommender",
        "focus-area",
        "question-ranker",
    }
    focus = models["focus-area"]
    assert focus["version"] == "1" and focus["run_id"] and "challenger" in focus["aliases"]
    assert focus["data_version"] and focus["main_metric"] == "f1"
    assert focus["main_metric_value"] is not None and focus["trained_at"]
    assert focus["requests"] >= 1 and focus["latency_ms"]["p50"] > 0


def without_live_counts(status: dict[str, Any]) -> dict[str, Any]:
    """A status document less the materialised store's counters, which its background
    refresh moves between two requests (entries built so far, hits); their names stay."""
    store = status.get("materialised_inputs")
    return status | {"materialised_inputs": sorted(store) if isinstance(store, dict) else store}


def test_status_fast_path_answers_the_documented_route_after_the_gateway(
    client: TestClient,
) -> None:
    """`StatusFastPath` answers the status before BentoML's routing, with the document the
    mounted FastAPI route gives (and its schema), only once the gateway let it through."""
    from serving.service import PrepIQService, StatusFastPath, views

    fast = client.get("/api/v1/ml/models/status", headers=SERVICE)
    assert fast.status_code == 200 and fast.headers["x-request-id"]
    with TestClient(views) as direct:  # the FastAPI route itself, no gateway, no fast path
        routed = direct.get("/ml/models/status")
    assert routed.status_code == 200
    assert without_live_counts(fast.json()) == without_live_counts(routed.json())
    assert_error(client.get("/api/v1/ml/models/status"), 401, None)
    # The middleware is installed, and answers on its own: the app behind it is never
    # reached for the status (anything else passes through).
    assert StatusFastPath in [cls for cls, _ in PrepIQService.middlewares]  # type: ignore[attr-defined]
    passed: list[str] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    bare = TestClient(StatusFastPath(behind))  # no lifespan: HTTP requests only
    assert without_live_counts(bare.get("/api/v1/ml/models/status").json()) == (
        without_live_counts(routed.json())
    )
    assert bare.get("/api/v1/ml/models/other").status_code == 204
    assert passed == ["/api/v1/ml/models/other"]


def test_request_id_is_echoed_and_docs_list_every_route(client: TestClient) -> None:
    answer = client.get("/api/v1/ml/models/status", headers={**SERVICE, "X-Request-ID": "abc-1"})
    assert answer.headers["x-request-id"] == "abc-1"
    paths = set(client.get("/docs.json").json()["paths"])
    assert {
        "/api/v1/ml/predict/progress",
        "/api/v1/ml/predict/focus-areas",
        "/api/v1/ml/recommend/topics",
        "/api/v1/ml/rank/questions",
        "/api/v1/ml/models/status",
        "/api/v1/users/{user_id}/dashboard",
        "/api/v1/users/{user_id}/predictions",
    } <= paths


# -- authentication and authorisation ------------------------------------------------------


def test_requests_without_valid_credentials_get_401(client: TestClient, student: str) -> None:
    route, body = "/api/v1/ml/predict/progress", {"user_id": student}
    assert_error(client.post(route, json=body), 401)
    assert_error(client.get(f"/api/v1/users/{student}/dashboard"), 401)
    expired = {"Authorization": f"Bearer {token(student, expires_in=-60)}"}
    assert "expired" in assert_error(client.post(route, json=body, headers=expired), 401)["error"]
    forged = {"Authorization": f"Bearer {token(student, secret='another-secret' * 3)}"}
    assert_error(client.post(route, json=body, headers=forged), 401)
    wrong_audience = as_user(student, aud="anon")
    assert_error(client.post(route, json=body, headers=wrong_audience), 401)
    assert_error(client.post(route, json=body, headers={"Authorization": "Basic abc"}), 401)
    assert_error(client.post(route, json=body, headers={"X-API-Key": "guess"}), 401)
    # Health, readiness and metrics stay open.
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_a_student_reads_only_their_own_rows(client: TestClient, student: str) -> None:
    other = as_user(str(uuid.uuid4()))
    answer = client.post("/api/v1/ml/predict/progress", json={"user_id": student}, headers=other)
    assert_error(answer, 403, field="user_id")
    assert_error(client.get(f"/api/v1/users/{student}/predictions", headers=other), 403, "user_id")
    # Services and admins read anyone's.
    admin = as_user(str(uuid.uuid4()), app_metadata={"role": "admin"})
    for headers in (SERVICE, admin):
        answer = client.post(
            "/api/v1/ml/predict/progress", json={"user_id": student}, headers=headers
        )
        assert answer.status_code == 200, answer.text


def test_reload_is_for_admins_only(client: TestClient, student: str) -> None:
    assert_error(client.post("/api/v1/ml/models/reload", headers=as_user(student)), 403)
    assert_error(client.post("/api/v1/ml/models/reload", headers=SERVICE), 403)
    answer = client.post("/api/v1/ml/models/reload", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"reloaded": {}}  # the store has nothing newer


def test_a_caller_over_the_rate_limit_gets_429_with_retry_after(client: TestClient) -> None:
    caller = as_user(str(uuid.uuid4()))
    codes = [
        client.get("/api/v1/ml/models/status", headers=caller).status_code
        for _ in range(RATE_LIMIT)
    ]
    assert codes == [200] * RATE_LIMIT
    limited = client.get("/api/v1/ml/models/status", headers=caller)
    assert_error(limited, 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another caller is not affected.
    assert client.get("/api/v1/ml/models/status", headers=SERVICE).status_code == 200


# -- bad input ---------------------------------------------------------------------------


def focus_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {column: 0.5 for column in FEATURE_COLUMNS}
    row.update(topic_id=1, mean_difficulty=3.0, attempts=10.0, **changes)
    return row


@pytest.mark.parametrize(
    ("route", "body", "status", "field"),
    [
        ("/api/v1/ml/predict/progress", {}, 400, None),
        (
            "/api/v1/ml/predict/progress",
            {"inputs": {"days": [], "days_since_join": 1, "topics_total": 5}},
            400,
            "inputs.days",
        ),
        (
            "/api/v1/ml/predict/progress",
            {
                "inputs": {
                    "days": [progress_day(completion_percent=120)],
                    "days_since_join": 1,
                    "topics_total": 5,
                }
            },
            400,
            "inputs.days.0.completion_percent",
        ),
        ("/api/v1/ml/predict/progress", {"user_id": 42}, 400, "user_id"),
        ("/api/v1/ml/predict/progress", {"user_id": "no-such-student"}, 404, "user_id"),
        ("/api/v1/ml/predict/progress", {"user_id": "x", "extra": 1}, 400, "extra"),
        ("/api/v1/ml/recommend/topics", {"user_id": "x", "top_k": 0}, 400, "top_k"),
        ("/api/v1/ml/rank/questions", {"subject_id": 999}, 404, "subject_id"),
        ("/api/v1/ml/rank/questions", {"subject_id": "one"}, 400, "subject_id"),
        ("/api/v1/ml/rank/questions", {"subject_id": 1, "questions": []}, 400, "questions"),
        (
            "/api/v1/ml/rank/questions",
            {"subject_id": 1, "questions": [{"text": "Define a vector.", "topic_id": 9999}]},
            400,
            "questions.0.topic_id",
        ),
        ("/api/v1/ml/predict/focus-areas", {"topics": []}, 400, "topics"),
        ("/api/v1/ml/predict/focus-areas", {"topics": [focus_row()] * 501}, 400, "topics"),
        (
            "/api/v1/ml/predict/focus-areas",
            {"topics": [focus_row(accuracy=1.5)]},
            400,
            "topics.0.accuracy",
        ),
        (
            "/api/v1/ml/predict/focus-areas",
            {"topics": [focus_row(), focus_row()]},
            400,
            "topics.1.topic_id",
        ),
    ],
)
def test_bad_input_gets_4xx_naming_the_field(
    client: TestClient, route: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    assert_error(client.post(route, json=body, headers=BAD_INPUT), status, field)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(client: TestClient, number: float) -> None:
    body = json.dumps({"topics": [focus_row(seconds_per_mark=number)]})  # NaN, Infinity
    answer = client.post(
        "/api/v1/ml/predict/focus-areas",
        content=body,
        headers={**BAD_INPUT, "Content-Type": "application/json"},
    )
    assert_error(answer, 400, "topics.0.seconds_per_mark")


def test_malformed_oversized_and_misrouted_requests(client: TestClient) -> None:
    json_headers = {**BAD_INPUT, "Content-Type": "application/json"}
    assert_error(
        client.post("/api/v1/ml/predict/progress", content=b'{"user_id": ', headers=json_headers),
        400,
    )
    big = b'{"user_id": "' + b"a" * MAX_BODY + b'"}'
    assert_error(client.post("/api/v1/ml/predict/progress", content=big, headers=json_headers), 413)
    assert_error(client.get("/api/v1/ml/no-such-route", headers=BAD_INPUT), 404)
    assert_error(
        client.get("/api/v1/users/not%20an%20id/dashboard", headers=BAD_INPUT), 404, "user_id"
    )
    assert_error(client.get("/api/v1/ml/predict/progress", headers=BAD_INPUT), 405)


def test_topic_stats_schema_is_the_focus_builders_columns() -> None:
    from serving.schemas import TopicTestStats

    assert list(TopicTestStats.model_fields) == ["topic_id", *FEATURE_COLUMNS]


# -- prediction log ----------------------------------------------------------------------


def test_every_prediction_is_logged_without_waiting_for_the_database(
    client: TestClient, student: str, served_models: str
) -> None:
    from _bentoml_sdk.service import get_current_service

    from core.database import get_engine

    requests = 25
    ids = [f"log-test-{i}" for i in range(requests)]
    for request_id in ids:
        answer = client.post(
            "/api/v1/ml/predict/focus-areas",
            json={"user_id": student},
            headers={**as_service(PREDICTION_LOG_KEY), "X-Request-ID": request_id},
        )
        assert answer.status_code == 200, answer.text
    table = ModelPrediction.__table__
    query = select(table).where(table.c.request_id.in_(ids))
    engine = get_engine(served_models)
    with engine.connect() as conn:
        assert conn.execute(query).all() == []  # buffered: no request waited for a write
    # What the shutdown hook runs: stop the writer, write what is left.
    get_current_service().flush_prediction_log()
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    row = rows[0]
    assert row["model_name"] == "prepiq-focus-area" and row["model_version"] == "1"
    assert row["user_id"] == student and len(row["inputs_digest"]) == 64
    assert row["request"] == {"user_id": student, "topics": None}
    assert row["response"]["focus_areas"] and row["latency_ms"] > 0


def test_the_prediction_log_keeps_rows_while_the_database_is_down(tmp_path: Path) -> None:
    from core.database import get_engine
    from serving.prediction_log import PredictionLog
    from tests.conftest import migrated_engine

    broken = get_engine(f"sqlite:///{tmp_path / 'missing' / 'no-tables.db'}")
    log = PredictionLog(broken, batch_size=1000, flush_seconds=3600)

    async def record_five() -> None:
        for i in range(5):
            await log.record(
                model_name="prepiq-focus-area",
                model_version="1",
                user_id=None,
                request_id=f"r{i}",
                inputs_digest="0" * 64,
                request={},
                response={},
                latency_ms=1.0,
            )

    asyncio.run(record_five())
    assert log.flush() == 0 and log.pending == 5  # no table: kept for the next attempt
    log.engine = migrated_engine(f"sqlite:///{tmp_path / 'source.db'}")
    log.close()
    assert log.pending == 0 and log.written == 5
