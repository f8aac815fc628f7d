"""The service's own Prometheus metrics, next to BentoML's on `/metrics`: per model, the
requests answered, their latency, the errors by status, and the version served.

Plain `prometheus_client` (BentoML 1.4 deprecates its `bentoml.metrics` wrapper): `bentoml
serve` sets PROMETHEUS_MULTIPROC_DIR before it starts a worker, so these write to that
folder and every worker's samples reach the one `/metrics` answer.

    prepiq_model_requests_total{model, version}            counter
    prepiq_model_errors_total{model, status}               counter
    prepiq_model_latency_seconds{model}                    histogram (buckets below)
    prepiq_model_served_version{model, name, version}      gauge: 1 served, 0 replaced
    prepiq_materialised_lookups_total{kind, result}        counter: hit or miss
    prepiq_http_requests_total{route, status}              counter: every API answer
    prepiq_http_request_duration_seconds{route}            histogram: as the caller saw it
    prepiq_prediction_log_rows_total{outcome}              counter: written, replayed, dropped
    prepiq_prediction_log_write_failures_total             counter
    prepiq_prediction_log_pending_rows                     gauge (summed over workers)

The two `prepiq_http_*` are counted by the gateway, after it shaped the answer, so they
count what callers got (a model error BentoML answers 500 is counted as the gateway's
503 or 4xx). deploy/prometheus/alerts.yml alerts on them.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

# From a cached answer (about 2 ms) to the request timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    name="prepiq_model_requests_total",
    documentation="Predictions answered, by model key and served version.",
    labelnames=["model", "version"],
)
ERRORS = Counter(
    name="prepiq_model_errors_total",
    documentation="Predictions that failed, by model key and HTTP status answered.",
    labelnames=["model", "status"],
)
LATENCY = Histogram(
    name="prepiq_model_latency_seconds",
    documentation="Time to build the input and run the model, by model key.",
    labelnames=["model"],
    buckets=LATENCY_BUCKETS,
)
SERVED_VERSION = Gauge(
    name="prepiq_model_served_version",
    documentation="1 for the registered version each model key serves now, 0 for one it "
    "served before a reload.",
    labelnames=["model", "name", "version"],
    multiprocess_mode="livemax",
)
MATERIALISED = Counter(
    name="prepiq_materialised_lookups_total",
    documentation="Requests that looked in the materialised store of per-student inputs, "
    "by kind of input and result (hit: read from memory; miss: built on request).",
    labelnames=["kind", "result"],
)


HTTP_REQUESTS = Counter(
    name="prepiq_http_requests_total",
    documentation="API requests answered, by route (ids replaced) and HTTP status.",
    labelnames=["route", "status"],
)
HTTP_LATENCY = Histogram(
    name="prepiq_http_request_duration_seconds",
    documentation="API request duration as the caller saw it, by route (ids replaced).",
    labelnames=["route"],
    buckets=LATENCY_BUCKETS,
)
_USER_ROUTE = re.compile(r"^/api/v1/users/[^/]+/([a-z-]+)$")
# The API's routes (serving.service): any other path is counted as "other", so a
# scanner's paths never each become a series.
ROUTES = frozenset(
    [
        *(f"/api/v1/ml/{r}" for r in ("predict/progress", "predict/focus-areas",
                                      "recommend/topics", "rank/questions",
                                      "models/status", "models/reload")),
        *(f"/api/v1/users/{{user_id}}/{v}" for v in ("progress", "recommendations",
                                                   "dashboard", "predictions")),
    ]
)  # fmt: skip


def route_label(path: str) -> str:
    """The route a path belongs to, with the user id replaced; "other" when unknown."""
    route = _USER_ROUTE.sub(r"/api/v1/users/{user_id}/\1", path)
    return route if route in ROUTES else "other"


def record_request(path: str, status: int, seconds: float) -> None:
    route = route_label(path)
    HTTP_REQUESTS.labels(route=route, status=str(status)).inc()
    HTTP_LATENCY.labels(route=route).observe(seconds)


def record_success(key: str, version: str, seconds: float) -> None:
    REQUESTS.labels(model=key, version=version).inc()
    LATENCY.labels(model=key).observe(seconds)


def record_error(key: str, status: int) -> None:
    ERRORS.labels(model=key, status=str(status)).inc()


def record_served(key: str, name: str, version: str, replaced: str | None = None) -> None:
    """Mark `version` as served for `key` (and `replaced`, the one before it, as not)."""
    if replaced is not None and replaced != version:
        SERVED_VERSION.labels(model=key, name=name, version=replaced).set(0)
    SERVED_VERSION.labels(model=key, name=name, version=version).set(1)


def record_lookup(kind: str, hit: bool) -> None:
    MATERIALISED.labels(kind=kind, result="hit" if hit else "miss").inc()


LOG_ROWS = Counter(
    name="prepiq_prediction_log_rows_total",
    documentation="Prediction log rows by outcome: written (inserted into model_predictions), "
    "replayed (from a dead worker's spool), dropped (lost: memory buffer or spool full).",
    labelnames=["outcome"],
)
LOG_FAILURES = Counter(
    name="prepiq_prediction_log_write_failures_total",
    documentation="Failed inserts into model_predictions (each retried after a backoff).",
)
LOG_PENDING = Gauge(
    name="prepiq_prediction_log_pending_rows",
    documentation="Prediction log rows in memory waiting for the database.",
    multiprocess_mode="livesum",
)


def record_log_rows(outcome: str, rows: int) -> None:
    LOG_ROWS.labels(outcome=outcome).inc(rows)


def record_log_failure() -> None:
    LOG_FAILURES.inc()


def set_log_pending(rows: int) -> None:
    LOG_PENDING.set(rows)
