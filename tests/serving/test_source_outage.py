"""The source database going away under a real `prepiq serve`, and coming back.

The service reads a real PostgreSQL (seeded as the served run's SQLite source, so the
models fit it) through a proxy the test cuts: new connections are refused and the held
ones reset, as when the database is down. Requests that need the source then answer 503
`source_unavailable` with Retry-After (never a 500), `/readyz` says the source is down
while `/livez` stays up, the 5xx share alerts through the webhook, and once the proxy
listens again the service answers by itself (and the alarm clears). The service is
first started with the source already down: it starts not ready, and recovers the same
way."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd

from synthetic.generator import seed_source
from tests.alert_inbox import Inbox
from tests.conftest import END_DATE, migrated_engine
from tests.serving_support import as_service, serving_process
from tests.tcp_proxy import CuttableProxy

OUTAGE_TIMEOUT_S = 60.0


def test_a_source_outage_answers_503_and_the_service_recovers_by_itself(
    served_models: str, make_pg_database: Callable[[], str], alert_inbox: Inbox, tmp_path: Path
) -> None:
    url = make_pg_database()
    engine = migrated_engine(url)
    seed_source(  # the served run's source (tests/conftest.py: seeded_sqlite), on PostgreSQL
        engine, students=300, seed=7, days=120, end_date=END_DATE, truth_dir=tmp_path / "truth"
    )
    student = str(pd.read_sql("SELECT id FROM users ORDER BY id LIMIT 1", engine)["id"][0])
    engine.dispose()
    proxy, proxied = CuttableProxy.before(url)
    with proxy:
        statuses: Counter[int] = Counter()
        proxy.cut()  # down before the service starts: it starts, not ready
        with (
            serving_process(
                proxied,
                tmp_path,
                up="/livez",
                PREPIQ_SERVING_RATE_LIMIT="100000/minute",  # the test polls, fast
                PREPIQ_SERVING_SOURCE_CHECK_SECONDS="0.5",
                PREPIQ_DB_CONNECT_TIMEOUT_SECONDS="2",
                PREPIQ_ALERT_WEBHOOK_URL=alert_inbox.url,
                PREPIQ_SERVING_ALERT_WINDOW_SECONDS="10",  # checked every second
                PREPIQ_SERVING_ALERT_MIN_REQUESTS="5",
            ) as (base, _),
            httpx.Client(base_url=base, headers=as_service(), timeout=30) as http,
        ):

            def progress() -> httpx.Response:
                answer = http.get(f"/api/v1/users/{student}/progress")
                statuses[answer.status_code] += 1
                return answer

            def until(done: Callable[[], bool]) -> float:
                began = time.monotonic()
                while not done():
                    assert time.monotonic() - began < OUTAGE_TIMEOUT_S, statuses
                    time.sleep(0.05)
                return time.monotonic() - began

            def after_a_request(done: Callable[[], bool]) -> Callable[[], bool]:
                """`done`, asked after one more request (the alarm needs requests to see)."""

                def check() -> bool:
                    progress()
                    return done()

                return check

            unready = http.get("/readyz")
            assert unready.status_code == 503, unready.text
            assert unready.json()["source"]["reachable"] is False, unready.text
            first = progress()
            assert first.status_code == 503 and first.json()["code"] == "source_unavailable"
            proxy.restore()
            started_back = until(lambda: progress().status_code == 200)
            until(lambda: http.get("/readyz").status_code == 200)

            proxy.cut()
            to_503 = until(lambda: progress().status_code == 503)
            down = progress()
            body = down.json()
            assert body["code"] == "source_unavailable", body
            assert "source database unavailable" in body["error"]
            assert int(down.headers["retry-after"]) > 0
            assert body["request_id"] == down.headers["x-request-id"]
            focus = http.post("/api/v1/ml/predict/focus-areas", json={"user_id": student})
            assert focus.status_code == 503 and focus.json()["code"] == "source_unavailable"
            readyz_down = until(lambda: http.get("/readyz").status_code == 503)
            ready = http.get("/readyz").json()
            assert ready["ready"] is False and ready["source"]["reachable"] is False
            assert ready["source"]["reason"], ready
            assert all(m["state"] == "serving" for m in ready["models"]), ready  # only the source
            assert http.get("/livez").status_code == 200
            until(after_a_request(lambda: "serving_errors" in alert_inbox.events()))
            alarm = alert_inbox.received[alert_inbox.events().index("serving_errors")]
            assert alarm["details"]["state"] == "firing", alarm

            proxy.restore()
            back = until(lambda: progress().status_code == 200)
            readyz_back = until(lambda: http.get("/readyz").status_code == 200)
            assert http.get("/readyz").json()["source"]["reachable"] is True
            until(after_a_request(lambda: alert_inbox.events().count("serving_errors") == 2))
            assert alert_inbox.received[-1]["details"]["state"] == "resolved"
            print(
                f"started with the source down; restored -> 200: {started_back:.2f} s; "
                f"source cut -> 503: {to_503:.2f} s, /readyz 503 {readyz_down:.2f} s later; "
                f"restored -> 200: {back:.2f} s, /readyz 200 {readyz_back:.2f} s later"
            )
        assert set(statuses) <= {200, 503}, statuses  # never a 500
