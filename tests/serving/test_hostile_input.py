"""Hostile input on every route, table-driven: bodies, headers, content types, paths,
numbers at and past every type's limits, dates at their limits, empty and huge
collections. Each gets its 4xx in the one error shape naming what is wrong (or, for a
value at a limit, the answer a valid request gets): never a 500, never a traceback.
In-process (`Service.to_asgi()`) except what only a real server shows: a body streamed
without a Content-Length."""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from features.focus import FEATURE_COLUMNS
from serving.schemas import LAST_DAY, MAX_ANSWERS, MAX_ID
from tests.serving_support import (
    ANONYMOUS_RATE_LIMIT,
    MAX_BODY,
    admin_user,
    as_service,
    as_user,
    assert_error,
    progress_day,
    serving_process,
)

PROGRESS = "/api/v1/ml/predict/progress"
FOCUS = "/api/v1/ml/predict/focus-areas"
RECOMMEND = "/api/v1/ml/recommend/topics"
RANK = "/api/v1/ml/rank/questions"
RELOAD = "/api/v1/ml/models/reload"
STATUS = "/api/v1/ml/models/status"
POST_ROUTES = (PROGRESS, FOCUS, RECOMMEND, RANK, RELOAD)
USER_VIEWS = ("progress", "recommendations", "dashboard", "predictions")
INT64_MAX = 2**63 - 1
CHALLENGE = 'Bearer realm="prepiq"'
ADDRESSES = itertools.count(1)  # a client address per credentials case


@pytest.fixture(scope="module")
def client(serving_app: Any) -> Iterator[TestClient]:
    with TestClient(serving_app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def catalogue(client: TestClient, student: str) -> dict[str, int]:
    """A subject and one of its topics, from the served source."""
    answer = client.post(RECOMMEND, json={"user_id": student, "top_k": 1}, headers=admin_user())
    assert answer.status_code == 200, answer.text
    first = answer.json()["recommendations"][0]
    return {"subject_id": int(first["subject_id"]), "topic_id": int(first["topic_id"])}


# -- valid bodies, to break one part at a time -------------------------------------------


def progress(**changes: Any) -> dict[str, Any]:
    inputs = {"days": [progress_day()], "days_since_join": 10, "topics_total": 20} | changes
    return {"inputs": inputs}


def focus_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FEATURE_COLUMNS, 0.5)
    row.update(topic_id=1, mean_difficulty=3.0, attempts=10.0)
    row.update(changes)
    return row


def practice_row(topic_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "topic_id": topic_id,
        "attempts": 5,
        "accuracy": 0.4,
        "attempts_last_30d": 2,
        "accuracy_last_30d": None,
        "accuracy_gain": 0.0,
        "days_since_last_attempt": 3,
    } | changes


def recommend(subject_id: int, **changes: Any) -> dict[str, Any]:
    return {"inputs": {"subject_ids": [subject_id], "practice": []} | changes}


@dataclass(frozen=True)
class Case:
    """One hostile request and what must answer it: `status`, and for an error the
    field it names (`blamed`, None for an error of the whole request)."""

    name: str
    method: str
    path: str
    status: int
    blamed: str | None = None
    body: Any = None  # JSON-encoded unless `raw`
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def cases(catalogue: dict[str, int]) -> list[Case]:
    """The table. Built from the served catalogue (a real subject and topic)."""
    subject, topic = catalogue["subject_id"], catalogue["topic_id"]
    multipart = {"Content-Type": "multipart/form-data"}  # no boundary
    table = [
        # -- the documented new-student case: no practice at all
        Case("recommend, empty practice", "POST", RECOMMEND, 200, body=recommend(subject)),
        Case(
            "recommend, empty practice, one subject",
            "POST",
            RECOMMEND,
            200,
            body=recommend(subject) | {"subject_id": subject, "top_k": 50},
        ),
        # -- content types, on every POST route
        *(
            Case(
                f"{route}: multipart, no boundary",
                "POST",
                route,
                415,
                "Content-Type",
                {},
                None,
                multipart,
            )
            for route in POST_ROUTES
        ),
        *(
            Case(
                f"{route}: {kind}",
                "POST",
                route,
                415,
                "Content-Type",
                None,
                b"a=1",
                {"Content-Type": kind},
            )
            for route in (PROGRESS, RELOAD)
            for kind in (
                "application/x-www-form-urlencoded",
                "text/plain",
                "multipart/form-data; boundary=x",
                "}{;;",
                "",
            )
        ),
        Case(
            "progress, JSON type with parameters and odd case",
            "POST",
            PROGRESS,
            200,
            raw=json.dumps(progress()).encode(),
            headers={"Content-Type": "Application/JSON ; charset=utf-8"},
        ),
        Case(
            "progress, no Content-Type at all",
            "POST",
            PROGRESS,
            200,
            raw=json.dumps(progress()).encode(),
        ),
        # -- bodies that are not the request
        Case(
            "progress, not JSON",
            "POST",
            PROGRESS,
            400,
            raw=b"{user_id: ",
            headers={"Content-Type": "application/json"},
        ),
        Case(
            "progress, invalid UTF-8",
            "POST",
            PROGRESS,
            400,
            raw=b'{"user_id": "\xff\xfe"}',
            headers={"Content-Type": "application/json"},
        ),
        Case(
            "progress, JSON null",
            "POST",
            PROGRESS,
            400,
            body=None,
            raw=b"null",
            headers={"Content-Type": "application/json"},
        ),
        Case("progress, JSON list", "POST", PROGRESS, 400, body=[1, 2]),
        Case("progress, JSON string", "POST", PROGRESS, 400, body="user"),
        Case(
            "progress, empty body",
            "POST",
            PROGRESS,
            400,
            raw=b"",
            headers={"Content-Type": "application/json"},
        ),
        Case(
            "progress, deeply nested",
            "POST",
            PROGRESS,
            400,
            raw=b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            headers={"Content-Type": "application/json"},
        ),
        Case("progress, both sources", "POST", PROGRESS, 400, body={"user_id": "x"} | progress()),
        Case(
            "progress, neither source (nulls)",
            "POST",
            PROGRESS,
            400,
            body={"user_id": None, "inputs": None},
        ),
        Case("focus, null topic list and no user", "POST", FOCUS, 400, body={"topics": None}),
        Case("progress, unknown field", "POST", PROGRESS, 400, "inputs.mood", progress(mood=1)),
        Case(
            "progress, null for a number",
            "POST",
            PROGRESS,
            400,
            "inputs.days_since_join",
            progress(days_since_join=None),
        ),
        Case(
            "progress, a string for a number",
            "POST",
            PROGRESS,
            400,
            "inputs.topics_total",
            progress(topics_total="many"),
        ),
        Case(
            "progress, boolean for a date",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.day",
            progress(days=[progress_day(day=True)]),
        ),
        # -- dates at and past their limits
        Case(
            "progress, day 0001-01-01",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.day",
            progress(days=[progress_day(day="0001-01-01")]),
        ),
        Case(
            "progress, day 9999-12-31",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.day",
            progress(days=[progress_day(day="9999-12-31")]),
        ),
        Case(
            "progress, day 1999-12-31",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.day",
            progress(days=[progress_day(day="1999-12-31")]),
        ),
        Case(
            "progress, day 2000-01-01",
            "POST",
            PROGRESS,
            200,
            body=progress(days=[progress_day(day="2000-01-01")]),
        ),
        Case(
            "progress, last day",
            "POST",
            PROGRESS,
            200,
            body=progress(days=[progress_day(day=LAST_DAY.isoformat())]),
        ),
        Case(
            "progress, first and last day in one window",
            "POST",
            PROGRESS,
            200,
            body=progress(
                days=[progress_day(day="2000-01-01"), progress_day(day=LAST_DAY.isoformat())]
            ),
        ),
        Case(
            "progress, day 2026-02-30",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.day",
            progress(days=[progress_day(day="2026-02-30")]),
        ),
        # -- numbers at and past each type's limits
        Case(
            "focus, topic_id 2^63",
            "POST",
            FOCUS,
            400,
            "topics.0.topic_id",
            {"topics": [focus_row(topic_id=2**63)]},
        ),
        Case(
            "focus, topic_id 2^31",
            "POST",
            FOCUS,
            400,
            "topics.0.topic_id",
            {"topics": [focus_row(topic_id=MAX_ID + 1)]},
        ),
        Case(
            "focus, topic_id -2^63",
            "POST",
            FOCUS,
            400,
            "topics.0.topic_id",
            {"topics": [focus_row(topic_id=-(2**63))]},
        ),
        Case(
            "focus, topic_id 0",
            "POST",
            FOCUS,
            400,
            "topics.0.topic_id",
            {"topics": [focus_row(topic_id=0)]},
        ),
        Case(
            "focus, topic_id at the INTEGER limit",
            "POST",
            FOCUS,
            200,
            body={"topics": [focus_row(topic_id=MAX_ID)]},
        ),
        Case(
            "focus, topic_id 1e3 as a float",
            "POST",
            FOCUS,
            200,
            body={"topics": [focus_row(topic_id=1000.0)]},
        ),
        Case(
            "focus, topic_id 1.5",
            "POST",
            FOCUS,
            400,
            "topics.0.topic_id",
            {"topics": [focus_row(topic_id=1.5)]},
        ),
        Case(
            "focus, 1e308 answers",
            "POST",
            FOCUS,
            400,
            "topics.0.attempts",
            {"topics": [focus_row(attempts=1e308)]},
        ),
        Case(
            "focus, answers at their limit",
            "POST",
            FOCUS,
            200,
            body={"topics": [focus_row(attempts=MAX_ANSWERS)]},
        ),
        Case(
            "focus, a 400-digit number",
            "POST",
            FOCUS,
            400,
            "topics.0.answers_per_week",
            None,
            b'{"topics": ['
            + json.dumps(focus_row()).encode()[:-1]
            + b', "answers_per_week": 1'
            + b"0" * 400
            + b"}]}",
            {"Content-Type": "application/json"},
        ),
        Case(
            "rank, a 5000-digit top_k",
            "POST",
            RANK,
            400,
            None,
            None,
            b'{"subject_id": 1, "top_k": 1' + b"0" * 5000 + b"}",
            {"Content-Type": "application/json"},
        ),
        Case(
            "recommend, topic_id 2^63",
            "POST",
            RECOMMEND,
            400,
            "inputs.practice.0.topic_id",
            recommend(subject, practice=[practice_row(2**63)]),
        ),
        Case(
            "recommend, subject 2^63",
            "POST",
            RECOMMEND,
            400,
            "inputs.subject_ids.0",
            recommend(2**63),
        ),
        Case(
            "recommend, interested 2^63",
            "POST",
            RECOMMEND,
            400,
            "inputs.interested_topic_ids.0",
            recommend(subject, interested_topic_ids=[2**63]),
        ),
        Case(
            "recommend, subject at the INTEGER limit",
            "POST",
            RECOMMEND,
            404,
            "inputs.subject_ids.0",
            recommend(MAX_ID),
        ),
        Case(
            "recommend, top_k 2^63",
            "POST",
            RECOMMEND,
            400,
            "top_k",
            recommend(subject) | {"top_k": 2**63},
        ),
        Case(
            "recommend, subject_id filter 2^63",
            "POST",
            RECOMMEND,
            400,
            "subject_id",
            recommend(subject) | {"subject_id": 2**63},
        ),
        Case(
            "recommend, practised topic",
            "POST",
            RECOMMEND,
            200,
            body=recommend(subject, practice=[practice_row(topic)]),
        ),
        Case(
            "recommend, attempts 1e308",
            "POST",
            RECOMMEND,
            400,
            "inputs.practice.0.attempts",
            recommend(subject, practice=[practice_row(topic, attempts=1e308)]),
        ),
        Case("rank, subject 2^63", "POST", RANK, 400, "subject_id", {"subject_id": 2**63}),
        Case("rank, subject -1", "POST", RANK, 400, "subject_id", {"subject_id": -1}),
        Case(
            "rank, subject at the INTEGER limit",
            "POST",
            RANK,
            404,
            "subject_id",
            {"subject_id": MAX_ID},
        ),
        Case(
            "rank, top_k 2^63", "POST", RANK, 400, "top_k", {"subject_id": subject, "top_k": 2**63}
        ),
        Case(
            "rank, question topic 2^63",
            "POST",
            RANK,
            400,
            "questions.0.topic_id",
            {"subject_id": subject, "questions": [{"text": "Define a vector.", "topic_id": 2**63}]},
        ),
        Case(
            "progress, 1e308 minutes",
            "POST",
            PROGRESS,
            400,
            "inputs.days.0.study_minutes",
            progress(days=[progress_day(study_minutes=1e308)]),
        ),
        Case(
            "progress, minutes at their limit",
            "POST",
            PROGRESS,
            200,
            body=progress(days=[progress_day(study_minutes=1440)]),
        ),
        Case(
            "progress, -0.0 logins",
            "POST",
            PROGRESS,
            200,
            body=progress(days=[progress_day(logins=-0.0)]),
        ),
        Case(
            "progress, 5e-324 streak",
            "POST",
            PROGRESS,
            200,
            body=progress(days=[progress_day(streak_days=5e-324)]),
        ),
        # -- empty and huge collections
        Case("progress, no days", "POST", PROGRESS, 400, "inputs.days", progress(days=[])),
        Case(
            "progress, 367 days",
            "POST",
            PROGRESS,
            400,
            "inputs.days",
            progress(days=[progress_day()] * 367),
        ),
        Case(
            "recommend, no subjects",
            "POST",
            RECOMMEND,
            400,
            "inputs.subject_ids",
            recommend(subject, subject_ids=[]),
        ),
        Case(
            "recommend, 51 subjects",
            "POST",
            RECOMMEND,
            400,
            "inputs.subject_ids",
            recommend(subject, subject_ids=[subject] * 51),
        ),
        Case(
            "recommend, 501 practised",
            "POST",
            RECOMMEND,
            400,
            "inputs.practice",
            recommend(subject, practice=[practice_row(topic)] * 501),
        ),
        Case(
            "rank, 101 questions",
            "POST",
            RANK,
            400,
            "questions",
            {
                "subject_id": subject,
                "questions": [{"text": "Define a vector.", "topic_id": topic}] * 101,
            },
        ),
        Case("focus, 501 topics", "POST", FOCUS, 400, "topics", {"topics": [focus_row()] * 501}),
        Case(
            "rank, a 4001-character question",
            "POST",
            RANK,
            400,
            "questions.0.text",
            {"subject_id": subject, "questions": [{"text": "x" * 4001, "topic_id": topic}]},
        ),
        Case("body over the limit", "POST", PROGRESS, 413, None, {"user_id": "a" * MAX_BODY}),
        # -- paths
        *(
            Case(
                f"{view}: a 65-character id",
                "GET",
                f"/api/v1/users/{'a' * 65}/{view}",
                404,
                "user_id",
            )
            for view in USER_VIEWS
        ),
        *(
            Case(
                f"{view}: a non-ASCII id",
                "GET",
                f"/api/v1/users/%C3%A9l%C3%A8ve/{view}",
                404,
                "user_id",
            )
            for view in USER_VIEWS
        ),
        *(
            Case(f"{view}: a NUL in the id", "GET", f"/api/v1/users/a%00b/{view}", 404, "user_id")
            for view in USER_VIEWS
        ),
        *(
            Case(
                f"{view}: an unknown student",
                "GET",
                f"/api/v1/users/{uuid.uuid4()}/{view}",
                404,
                "user_id",
            )
            for view in USER_VIEWS
        ),
        Case("a dot-dot path", "GET", "/api/v1/users/..%2F..%2Fetc/progress", 404),
        Case("an unknown route", "GET", "/api/v1/ml/nothing", 404),
        Case("GET on a POST route", "GET", PROGRESS, 405),
        Case("DELETE on the status", "DELETE", STATUS, 405),
        Case(
            "status with a body",
            "GET",
            STATUS,
            200,
            raw=b"\xff" * 100,
            headers={"Content-Type": "text/plain"},
        ),
    ]
    return table


def send(client: TestClient, case: Case, headers: dict[str, str] | None = None) -> Any:
    content = case.raw
    sent = dict(case.headers)
    if content is None and (case.body is not None or case.method == "POST"):
        content = json.dumps(case.body).encode()
        sent.setdefault("Content-Type", "application/json")
    return client.request(
        case.method, case.path, content=content, headers={**(headers or admin_user()), **sent}
    )


def test_hostile_requests_get_their_4xx_naming_the_problem(
    client: TestClient, catalogue: dict[str, int]
) -> None:
    """Every case of the table, each checked on its own, reported all at once."""
    wrong: dict[str, str] = {}
    for case in cases(catalogue):
        answer = send(client, case)
        try:
            if case.status < 400:
                assert answer.status_code == case.status, answer.text[:500]
            else:
                body = assert_error(answer, case.status, case.blamed)
                assert body["field"] == case.blamed, body  # None: the whole request's fault
                if case.status == 415:
                    assert body["code"] == "unsupported_media_type", body
        except AssertionError as exc:
            wrong[case.name] = f"{answer.status_code}: {exc}"[:600]
    assert wrong == {}


def test_an_empty_practice_list_recommends_what_a_new_student_should_start_with(
    client: TestClient, catalogue: dict[str, int]
) -> None:
    answer = client.post(RECOMMEND, json=recommend(catalogue["subject_id"]), headers=admin_user())
    assert answer.status_code == 200, answer.text
    topics = answer.json()["recommendations"]
    assert topics and {t["subject_id"] for t in topics} == {catalogue["subject_id"]}
    assert [t["rank"] for t in topics] == list(range(1, len(topics) + 1))
    assert all(0 <= t["confidence"] <= 1 and t["reason"] for t in topics)


def test_every_date_time_answered_carries_its_offset(client: TestClient) -> None:
    from datetime import datetime

    from serving.schemas import StoredPrediction

    status = client.get(STATUS, headers=admin_user()).json()
    answered = [status["started_at"]]
    answered += [m["loaded_at"] for m in status["models"]]
    answered += [a["since"] for a in status["availability"]]
    assert all(datetime.fromisoformat(value).utcoffset() is not None for value in answered)
    # A row read back from SQLite has a naive time, in UTC (CURRENT_TIMESTAMP).
    stored = StoredPrediction.model_validate(
        {
            "created_at": datetime(2026, 11, 20, 8, 30),
            "model_name": "prepiq-focus-area",
            "model_version": "1",
            "request_id": "r",
            "latency_ms": 1.0,
            "response": {},
        }
    )
    assert stored.model_dump(mode="json")["created_at"] == "2026-11-20T08:30:00Z"


# -- headers and credentials ---------------------------------------------------------------

CREDENTIALS = [
    ("no credentials", {}, None),
    ("Basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_request"),
    ("Bearer with nothing", {"Authorization": "Bearer "}, "invalid_request"),
    ("Bearer garbage", {"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ("Bearer huge", {"Authorization": "Bearer " + "a" * 6000}, "invalid_token"),
    ("Bearer of dots", {"Authorization": "Bearer ..."}, "invalid_token"),
    (
        "Bearer with a none alg",
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
        "invalid_token",
    ),
    ("non-ASCII key", {"X-API-Key": "cl\u00e9".encode("latin-1")}, "invalid_token"),
    ("UTF-8 key", {"X-API-Key": "\U0001f511".encode()}, "invalid_token"),
    ("empty key, no token", {"X-API-Key": ""}, None),
    ("wrong key", {"X-API-Key": "x" * 2000}, "invalid_token"),
]


@pytest.mark.parametrize(
    ("headers", "error"), [c[1:] for c in CREDENTIALS], ids=[c[0] for c in CREDENTIALS]
)
def test_refused_credentials_get_401_with_a_bearer_challenge(
    serving_app: Any, client: TestClient, headers: dict[str, Any], error: str | None
) -> None:
    # A client address of its own, so these 401s do not count against the others'.
    anonymous = TestClient(serving_app, client=(f"10.1.0.{next(ADDRESSES)}", 5000))
    for method, route in (
        ("POST", PROGRESS),
        ("GET", STATUS),
        ("GET", "/api/v1/users/x/dashboard"),
    ):
        answer = anonymous.request(
            method, route, content=b"{}", headers={"Content-Type": "application/json", **headers}
        )
        assert_error(answer, 401)
        expected = CHALLENGE + (f', error="{error}"' if error else "")
        assert answer.headers["www-authenticate"] == expected, route


def test_odd_headers_are_answered_not_crashed_on(client: TestClient, student: str) -> None:
    body = json.dumps({"user_id": student}).encode()
    odd: list[dict[str, bytes]] = [
        {"X-Request-ID": b"x" * 500},  # not echoed: a fresh id instead
        {"X-Request-ID": "../\u00e9".encode()},
        {"Accept": b"text/html"},
        {"Accept-Encoding": b"gzip;q=foo"},
        {"Content-Encoding": b"gzip"},  # claims a compression it does not use: read as JSON
    ]
    for extra in odd:
        headers = [
            *((name.encode(), value.encode()) for name, value in admin_user().items()),
            (b"Content-Type", b"application/json"),
            *((name.encode(), value) for name, value in extra.items()),
        ]
        answer = client.post(PROGRESS, content=body, headers=headers)
        assert answer.status_code == 200, (extra, answer.text)
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"]), extra  # fresh
    duplicated = client.post(
        PROGRESS,
        content=body,
        headers=[  # two Content-Types: the framework reads the first, so both are checked
            *admin_user().items(),
            ("Content-Type", "multipart/form-data"),
            ("Content-Type", "application/json"),
        ],
    )
    assert_error(duplicated, 415, "Content-Type")


# -- anonymous callers are rate-limited by address ---------------------------------------


def test_unauthenticated_callers_are_rate_limited_by_address_and_the_429_names_them(
    serving_app: Any, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    guesser = TestClient(serving_app, client=("10.2.0.1", 40000))
    codes = [
        guesser.get(STATUS, headers={"X-API-Key": f"guess-{i}"}).status_code
        for i in range(ANONYMOUS_RATE_LIMIT)
    ]
    assert codes == [401] * ANONYMOUS_RATE_LIMIT
    with caplog.at_level(logging.INFO, logger="prepiq.serving.requests"):
        limited = guesser.get(STATUS)
    assert_error(limited, 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    lines = [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("status") == 429
    ]
    assert [line["caller"] for line in lines] == ["anon:10.2.0.1"], caplog.records
    # Another address is not limited, and a valid credential from the same one neither.
    other = TestClient(serving_app, client=("10.2.0.2", 40000))
    assert_error(other.get(STATUS), 401)
    assert guesser.get(STATUS, headers=as_service()).status_code == 200


def test_an_authenticated_callers_429_log_line_names_the_caller(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.serving_support import RATE_LIMIT

    user = str(uuid.uuid4())
    caller = as_user(user)
    for _ in range(RATE_LIMIT):
        client.get(STATUS, headers=caller)
    with caplog.at_level(logging.INFO, logger="prepiq.serving.requests"):
        assert_error(client.get(STATUS, headers=caller), 429)
    lines = [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("status") == 429
    ]
    assert [line["caller"] for line in lines] == [f"user:{user}"]


# -- what only a real server shows ---------------------------------------------------------


def test_a_real_server_counts_chunked_bodies_and_limits_the_forwarded_client(
    served_models: str, tmp_path: Path
) -> None:
    """A body sent chunked has no Content-Length to refuse up front: the gateway counts
    the bytes as they arrive. The same server shows the anonymous limit counting the
    client a proxy forwards."""

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"user_id": "'
        sent = 0
        while sent < total:
            yield b"a" * 65536
            sent += 65536
        yield b'"}'

    with (
        serving_process(served_models, tmp_path) as (base, _),
        httpx.Client(base_url=base, headers=admin_user(), timeout=60) as http,
    ):
        for route in (PROGRESS, RELOAD):
            answer = http.post(
                route,
                content=chunks(2 * MAX_BODY),
                headers={"Content-Type": "application/json"},
            )
            assert "content-length" not in answer.request.headers
            assert answer.request.headers["transfer-encoding"] == "chunked"
            assert_error(answer, 413)
        # Under the limit, chunked is fine (an unknown student here: 404).
        pieces = iter([b'{"user_id": ', b'"no-such-', b'student"}'])
        small = http.post(PROGRESS, content=pieces, headers={"Content-Type": "application/json"})
        assert_error(small, 404, "user_id")
        boundless = http.post(
            PROGRESS, content=b"{}", headers={"Content-Type": "multipart/form-data"}
        )
        assert_error(boundless, 415, "Content-Type")

        # Behind a reverse proxy the anonymous limit counts the forwarded client, not the
        # proxy: uvicorn trusts X-Forwarded-For from FORWARDED_ALLOW_IPS (loopback here).
        def guess_from(address: str) -> httpx.Response:
            return http.get(STATUS, headers={"X-API-Key": "guess", "X-Forwarded-For": address})

        for _ in range(ANONYMOUS_RATE_LIMIT):
            assert_error(guess_from("10.9.0.1"), 401)
        assert_error(guess_from("10.9.0.1"), 429)
        assert_error(guess_from("10.9.0.2"), 401)
        assert http.get("/readyz").status_code == 200  # still serving
    lines = [
        json.loads(line)
        for line in (tmp_path / "serve.log").read_text().splitlines()
        if line.startswith("{")
    ]
    limited_callers = [line.get("caller") for line in lines if line.get("status") == 429]
    assert limited_callers == ["anon:10.9.0.1"], limited_callers
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log
