"""The gateway's per-caller rate limit with a shared storage: two service workers (two
gateways) counting in the machine's real Redis hold one limit between them, and a Redis
that cannot be reached lets requests through instead of failing them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from limits.strategies import STRATEGIES
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from core.config import Settings
from serving.middleware import Gateway
from tests.serving_support import SERVICE_KEY

REDIS_URL = "redis://127.0.0.1:6379"
LIMIT = 3


async def _ok(_request: Any) -> JSONResponse:
    return JSONResponse({"ok": True})


def worker(storage: str, strategy: str = "moving-window", per: str = "minute") -> TestClient:
    """One service worker's gateway in front of a trivial route (by default counting
    exactly, so a burst across a window's edge is limited all the same)."""
    settings = Settings(
        serving_rate_limit=f"{LIMIT}/{per}",
        serving_rate_limit_strategy=strategy,
        serving_rate_limit_storage=storage,
        serving_api_keys=[SERVICE_KEY],
    )
    app = Starlette(routes=[Route("/api/v1/ping", _ok)])
    return TestClient(Gateway(app, settings=settings))


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis database of the local server, emptied after the test (database 15 is kept
    for this test alone)."""
    url = f"{REDIS_URL}/15"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # the machine's Redis runs on CI too
        pytest.fail(f"the local Redis at {REDIS_URL} is down: {exc}")
    client.flushdb()  # counts an interrupted earlier run left
    yield url
    client.flushdb()


def test_workers_sharing_redis_hold_one_limit_per_caller(redis_db: str) -> None:
    first, second = worker(redis_db), worker(redis_db)
    headers = {"X-API-Key": SERVICE_KEY}  # one caller; its counts start empty (redis_db)
    codes = [
        (first if i % 2 == 0 else second).get("/api/v1/ping", headers=headers).status_code
        for i in range(LIMIT)
    ]
    assert codes == [200] * LIMIT
    for client in (first, second):
        limited = client.get("/api/v1/ping", headers=headers)
        assert limited.status_code == 429, limited.text
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1


def test_each_worker_counts_alone_in_memory() -> None:
    first, second = worker("memory://"), worker("memory://")
    headers = {"X-API-Key": SERVICE_KEY}
    for client in (first, second):
        assert [client.get("/api/v1/ping", headers=headers).status_code for _ in range(LIMIT)] == [
            200
        ] * LIMIT
        assert client.get("/api/v1/ping", headers=headers).status_code == 429


def test_an_unreachable_storage_lets_requests_through() -> None:
    # Port 1 refuses at once: the limiter's storage error must not become a 500.
    client = worker("redis://127.0.0.1:1/0?socket_connect_timeout=0.5&socket_timeout=0.5")
    headers = {"X-API-Key": SERVICE_KEY}
    codes = [client.get("/api/v1/ping", headers=headers).status_code for _ in range(LIMIT + 2)]
    assert codes == [200] * (LIMIT + 2)


def test_an_unknown_storage_scheme_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="serving_rate_limit_storage"):
        Settings(serving_rate_limit_storage="mongodb://localhost")


def _clear_of_an_hour_edge(margin_s: float = 30.0) -> None:
    """Wait past the next hour's edge when it is under `margin_s` away: the counting
    strategies' windows are aligned to it, and a burst across it is counted in two."""
    to_edge = 3600 - time.time() % 3600
    if to_edge < margin_s:
        time.sleep(to_edge + 0.1)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_limits_a_burst_at_its_limit(strategy: str) -> None:
    _clear_of_an_hour_edge()
    client = worker("memory://", strategy, per="hour")
    gateway = client.app
    assert isinstance(gateway, Gateway)
    assert type(gateway.limiter) is STRATEGIES[strategy]  # the setting is the one used
    headers = {"X-API-Key": SERVICE_KEY}
    codes = [client.get("/api/v1/ping", headers=headers).status_code for _ in range(LIMIT + 1)]
    assert codes == [200] * LIMIT + [429]


def test_an_unknown_strategy_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="serving_rate_limit_strategy"):
        Settings(serving_rate_limit_strategy="token-bucket")
