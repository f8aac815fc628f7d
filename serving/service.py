"""The PrepIQ serving API: the BentoML service the app calls.

    bentoml serve serving.service:PrepIQService     (or `prepiq serve`)

The four prediction routes are BentoML APIs (POST, pydantic bodies). The GET routes
(models status, per-user views) need path parameters, which BentoML APIs do not have, so
they are a FastAPI app mounted into the same service (its routes join `/docs.json`).
Everything passes the gateway middleware (`serving.middleware`).

Concurrency: the APIs are `async` and run feature building and the model in a thread
pool of `serving_inference_threads` (a CapacityLimiter), so the event loop stays free:
`/models/status`, health and readiness answer while inference is busy, and requests
waiting for a thread hold no thread. torch runs one thread per call (`serving.models`)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from core.config import get_settings

get_settings().apply_environment()  # BENTOML_HOME and the offline switches, before bentoml

import anyio  # noqa: E402
import bentoml  # noqa: E402
from bentoml._internal.context import server_context  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402
from sqlalchemy import select  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402

from core.database import get_engine  # noqa: E402
from core.logging import configure_logging, get_logger  # noqa: E402
from core.metrics import set_component  # noqa: E402
from features.schema import ModelPrediction  # noqa: E402
from serving import metrics, predictors, schemas  # noqa: E402
from serving.errors import (  # noqa: E402
    NotFoundError,
    NotReadyError,
    ReloadFailedError,
    ServingError,
    from_serving_error,
)
from serving.feature_store import MaterialisedInputs  # noqa: E402
from serving.middleware import ERROR_KEY, Gateway  # noqa: E402
from serving.models import CARDS, ModelSet, ServedModel  # noqa: E402
from serving.online_features import OnlineFeatures  # noqa: E402
from serving.prediction_log import PredictionLog, Spool  # noqa: E402
from serving.security import Principal  # noqa: E402
from serving.source import SourceHealth  # noqa: E402
from serving.stats import ModelStats  # noqa: E402

log = get_logger("prepiq.serving")
Req = TypeVar("Req", bound=BaseModel)
T = TypeVar("T")
Predictor = Callable[[ServedModel, OnlineFeatures, Any], predictors.Prediction]
DASHBOARD_TOP = 5
STATUS_ROUTE = "/api/v1/ml/models/status"
STORED_PREDICTIONS = 50
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ClientErrorFilter(logging.Filter):
    """Drops BentoML's "Exception on <path>" error (with its traceback) when the exception
    is a client error: a ServingError under 500 or pydantic's input validation. The gateway
    answers those with a 4xx and logs one request line; a traceback per bad request would
    bury real errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ServingError):
            return exc.status >= 500
        return not isinstance(exc, ValidationError)


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this worker when the `bentoml serve` process that started
    it dies, even by `kill -9` (Linux's PR_SET_PDEATHSIG); else the worker lives on,
    orphaned, holding the port, and a restart fails. SIGKILL, not SIGTERM: the port is
    free at once, and the spool (serving.prediction_log) makes the kill lose nothing."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("worker not tied to its parent", errno=ctypes.get_errno())
    elif os.getppid() != parent:  # the parent died before the call took effect
        os._exit(1)


# Only in a worker (BentoML sets its index before importing this module); the process
# running `bentoml serve` and the tests' in-process service keep their own lifetimes.
if server_context.worker_index is not None:
    _die_with_parent()

logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorFilter())
views = FastAPI(title="PrepIQ views", docs_url=None, redoc_url=None, openapi_url=None)
SETTINGS = get_settings()


@bentoml.service(
    name="prepiq",
    # One worker by default: each loads every model (memory target 1.5 GB); more need a
    # shared rate-limit storage (PREPIQ_SERVING_RATE_LIMIT_STORAGE) to keep the limit.
    workers=SETTINGS.serving_workers,
    # The gateway enforces the per-request timeout and the concurrency limit with the
    # service's error shape; BentoML's own timeout stays as a last resort, a second later.
    # Not longer: BentoML's timeout middleware never cancels its timer, so each request's
    # context (its spans, futures, timers) lives that long; at 60 s every full garbage
    # collection walked a minute of requests (130-170 ms pauses every few seconds).
    traffic={"timeout": SETTINGS.serving_request_timeout_seconds + 1.0},
)
@bentoml.asgi_app(views, path="/api/v1")
class PrepIQService:
    """Progress forecasts, focus areas, topic recommendations and question rankings for
    the PrepIQ app, from each model's champion."""

    def __init__(self) -> None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        set_component("service")  # label this process's database metrics
        engine = get_engine(pooled=True)
        self.started_at = datetime.now(UTC)
        self.source = SourceHealth(engine, settings.serving_source_check_seconds)
        self.models = ModelSet(
            settings.resolved_tracking_uri, settings.serving_required_models, _report_served
        )
        self.models.refresh()
        self.features = OnlineFeatures(engine, settings.serving_catalogue_ttl_seconds)
        self.source.current()  # a source down at start: not ready from the first /readyz
        self.store = self._materialise(settings)
        self.predictions = PredictionLog(
            engine,
            settings.serving_log_batch_size,
            settings.serving_log_flush_seconds,
            spool=(
                Spool(settings.resolved_spool_dir, settings.serving_spool_max_bytes)
                if settings.serving_spool
                else None
            ),
            retry_max_seconds=settings.serving_log_retry_max_seconds,
        )
        self.stats = {key: ModelStats() for key in CARDS}
        self.threads = anyio.CapacityLimiter(settings.serving_inference_threads)
        # The loaded models are hundreds of thousands of long-lived objects: left to the
        # collector, each full collection walks them all (a pause of every request).
        gc.collect()
        gc.freeze()
        self.models.follow(settings.serving_champion_poll_seconds)
        log.info(
            "service ready" if self.models.ready else "service NOT ready: models missing",
            models={key: self.models.availability(key).state for key in CARDS},
        )

    def _materialise(self, settings: Any) -> MaterialisedInputs | None:
        """Start the materialised store (`serving.feature_store`) with the inputs the
        loaded models take; None when `serving_materialised_students` is 0."""
        if settings.serving_materialised_students <= 0:
            return None
        store = MaterialisedInputs(
            self.features,
            settings.serving_materialised_students,
            settings.serving_materialise_seconds,
            settings.serving_materialised_max_age_seconds,
        )
        forecaster = self.models.get("progress-forecaster")
        if forecaster is not None:  # a reloaded window is added by its first request
            store.want("progress", int(forecaster.model.window_days))
        store.want("focus")
        store.want("recommend")
        self.features.materialised = store
        store.start()
        return store

    def __is_ready__(self) -> bool:
        return self.models.ready and self.source.state.reachable

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """Write every buffered prediction before the process ends."""
        self.models.close()
        if self.store is not None:
            self.store.close()
        self.predictions.close()

    # -- prediction routes -------------------------------------------------------------

    @bentoml.api(route="/api/v1/ml/predict/progress")
    async def predict_progress(
        self, body: schemas.ProgressRequest, /, ctx: bentoml.Context
    ) -> schemas.ProgressResponse:
        """Completion % at each horizon (+30/+60/+90 days) with 80% intervals."""
        return await self._api(ctx, "progress-forecaster", body, predictors.predict_progress)

    @bentoml.api(route="/api/v1/ml/predict/focus-areas")
    async def predict_focus_areas(
        self, body: schemas.FocusAreasRequest, /, ctx: bentoml.Context
    ) -> schemas.FocusAreasResponse:
        """Weak topics with probabilities and improvement suggestions."""
        return await self._api(ctx, "focus-area", body, predictors.predict_focus_areas)

    @bentoml.api(route="/api/v1/ml/recommend/topics")
    async def recommend_topics(
        self, body: schemas.RecommendRequest, /, ctx: bentoml.Context
    ) -> schemas.RecommendResponse:
        """Top-k topics to study next, with confidence and a reason."""
        return await self._api(ctx, "topic-recommender", body, predictors.recommend_topics)

    @bentoml.api(route="/api/v1/ml/rank/questions")
    async def rank_questions(
        self, body: schemas.RankQuestionsRequest, /, ctx: bentoml.Context
    ) -> schemas.RankQuestionsResponse:
        """A subject's questions (or given texts) ranked by P(in the next paper)."""
        return await self._api(ctx, "question-ranker", body, predictors.rank_questions)

    @bentoml.api(route="/api/v1/ml/models/reload")
    async def reload_models(self, ctx: bentoml.Context) -> schemas.ReloadResponse:
        """Admin: read the registry now and serve every model's champion in this worker
        (the others follow within their poll interval). Each model is swapped in only
        once loaded, so no request is dropped; a champion that cannot be served is a
        503 naming it, and its model keeps the version it served."""
        try:
            _principal(ctx.request.scope).require_admin()
            refreshed = await anyio.to_thread.run_sync(self.models.refresh)
            if refreshed.registry != "registry":
                raise ReloadFailedError("model registry unreachable: nothing reloaded")
            if refreshed.failed:
                raise ReloadFailedError(
                    "not reloaded: "
                    + "; ".join(f"{key}: {why}" for key, why in refreshed.failed.items())
                    + (f" (reloaded: {refreshed.served})" if refreshed.served else "")
                )
        except ServingError as exc:
            ctx.request.scope["state"][ERROR_KEY] = exc
            raise
        return schemas.ReloadResponse(reloaded=refreshed.served)

    async def _api(self, ctx: bentoml.Context, key: str, body: Req, predict: Predictor) -> Any:
        """Run one prediction route: authorise, predict in a worker thread, record stats
        and the prediction log. A ServingError is left for the gateway to answer (BentoML
        would turn it into a plain 500)."""
        scope = ctx.request.scope
        try:
            user_id = getattr(body, "user_id", None)
            if user_id is not None:
                _principal(scope).require_user(user_id)
            prediction = await self.predict(key, body, predict, scope["state"]["request_id"])
        except ServingError as exc:
            scope["state"][ERROR_KEY] = exc
            raise
        return prediction.response

    async def predict(
        self, key: str, body: BaseModel, predict: Predictor, request_id: str
    ) -> predictors.Prediction:
        """A model's prediction for `body`, timed, counted and logged."""
        model = self.models.get(key)
        if model is None:
            state = self.models.availability(key)
            raise NotReadyError(
                f"model {key} is not served ({state.state}: {state.reason or 'starting'})",
                headers={"Retry-After": "30"},
            )
        started = time.perf_counter()
        try:
            prediction = await self._read(predict, model, self.features, body)
        except Exception as exc:
            self.stats[key].record(1000 * (time.perf_counter() - started), ok=False)
            metrics.record_error(key, exc.status if isinstance(exc, ServingError) else 500)
            raise
        seconds = time.perf_counter() - started
        latency_ms = 1000 * seconds
        self.stats[key].record(latency_ms, ok=True)
        metrics.record_success(key, model.version, seconds)
        # Durable before the answer goes (with the spool: awaits the group fsync).
        await self.predictions.record(
            model_name=model.name,
            model_version=model.version,
            user_id=prediction.user_id,
            request_id=request_id,
            inputs_digest=prediction.inputs_digest,
            request=body.model_dump(mode="json"),
            response=prediction.response.model_dump(mode="json"),
            latency_ms=round(latency_ms, 3),
        )
        return prediction

    # -- GET routes (the mounted FastAPI app, prefix /api/v1) ---------------------------

    @views.get(STATUS_ROUTE.removeprefix("/api/v1"), response_model=schemas.ModelsStatusResponse)
    async def models_status(self) -> schemas.ModelsStatusResponse:
        """Each served model: version, aliases, run, data version, trained and loaded at,
        main metric, live request count and latency percentiles. Reads memory only.
        (Served by `StatusFastPath`; this route documents it and answers the same.)"""
        return self.status()

    def status(self) -> schemas.ModelsStatusResponse:
        """The `/models/status` document, from memory."""
        models = [
            schemas.ModelStatus(
                key=m.key,
                name=m.name,
                version=m.version,
                aliases=list(m.aliases),
                run_id=m.run_id,
                data_version=m.data_version,
                trained_at=m.trained_at,
                loaded_at=m.loaded_at,
                main_metric=m.main_metric,
                main_metric_value=m.main_metric_value,
                bento_tag=m.bento_tag,
                requests=self.stats[m.key].requests,
                errors=self.stats[m.key].errors,
                latency_ms=self.stats[m.key].percentiles(),
            )
            for m in self.models
        ]
        store = None
        if self.store is not None:
            refreshed = self.store.last_refresh
            store = schemas.MaterialisedInputsStatus(
                students=refreshed.students if refreshed else 0,
                entries=self.store.size(),
                hits=self.store.hits,
                misses=self.store.misses,
                outputs_computed=self.store.outputs_computed,
                outputs_reused=self.store.outputs_reused,
                last_refresh_seconds=refreshed.seconds if refreshed else None,
            )
        return schemas.ModelsStatusResponse(
            ready=self.models.ready,
            started_at=self.started_at,
            process_id=os.getpid(),
            models=models,
            availability=self.availability(),
            materialised_inputs=store,
            prediction_log=schemas.PredictionLogStatus.model_validate(
                asdict(self.predictions.status())
            ),
        )

    def availability(self) -> list[schemas.ModelAvailability]:
        """Every model's state (`/readyz`, `/models/status`)."""
        return [
            schemas.ModelAvailability.model_validate(asdict(self.models.availability(key)))
            for key in CARDS
        ]

    async def readiness(self) -> schemas.Readiness:
        """The `/readyz` document: ready when every required model is served and the
        source answers (checked at most every `serving_source_check_seconds`)."""
        source = self.source.fresh()
        if source is None:  # a check is due: it may wait on the database
            source = await anyio.to_thread.run_sync(self.source.current)
        return schemas.Readiness(
            ready=self.models.ready and source.reachable,
            required=list(self.models.required),
            models=self.availability(),
            source=schemas.SourceReadiness(**asdict(source)),
        )

    async def _read(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)` in an inference thread; a source it cannot reach is a 503."""
        return await anyio.to_thread.run_sync(
            self.source.call, lambda: read(*args), limiter=self.threads
        )

    @views.get("/users/{user_id}/progress", response_model=schemas.UserProgressView)
    async def user_progress(self, user_id: str, request: Request) -> schemas.UserProgressView:
        """Recorded completion history and the forecast."""
        body = schemas.ProgressRequest(user_id=_checked_user(request, user_id))
        forecast = await self._view(
            request, "progress-forecaster", body, predictors.predict_progress
        )
        history = await self._read(self.features.completion_history, user_id)
        return schemas.UserProgressView(
            user_id=user_id,
            history=[
                schemas.CompletionRecord.model_validate(r) for r in history.to_dict("records")
            ],
            forecast=forecast,
        )

    @views.get("/users/{user_id}/recommendations", response_model=schemas.RecommendResponse)
    async def user_recommendations(
        self, user_id: str, request: Request
    ) -> schemas.RecommendResponse:
        """The student's top topics to study next."""
        body = schemas.RecommendRequest(user_id=_checked_user(request, user_id))
        response = await self._view(request, "topic-recommender", body, predictors.recommend_topics)
        assert isinstance(response, schemas.RecommendResponse)
        return response

    @views.get("/users/{user_id}/dashboard", response_model=schemas.DashboardView)
    async def user_dashboard(self, user_id: str, request: Request) -> schemas.DashboardView:
        """Progress forecast, weakest topics and top recommendations in one answer."""
        checked = _checked_user(request, user_id)
        progress = await self._view(
            request,
            "progress-forecaster",
            schemas.ProgressRequest(user_id=checked),
            predictors.predict_progress,
        )
        focus = await self._view(
            request,
            "focus-area",
            schemas.FocusAreasRequest(user_id=checked),
            predictors.predict_focus_areas,
        )
        recommended = await self._view(
            request,
            "topic-recommender",
            schemas.RecommendRequest(user_id=checked, top_k=DASHBOARD_TOP),
            predictors.recommend_topics,
        )
        assert isinstance(progress, schemas.ProgressResponse)
        assert isinstance(focus, schemas.FocusAreasResponse)
        assert isinstance(recommended, schemas.RecommendResponse)
        student = await self._read(self.features.student_rows, checked, ())
        row = student["users"].iloc[0]
        return schemas.DashboardView(
            user_id=checked,
            display_name=row["display_name"],
            exam_date=row["exam_date"],
            progress=progress,
            focus_areas=focus.focus_areas[:DASHBOARD_TOP],
            recommendations=recommended.recommendations,
        )

    @views.get("/users/{user_id}/predictions", response_model=schemas.UserPredictionsView)
    async def user_predictions(self, user_id: str, request: Request) -> schemas.UserPredictionsView:
        """The student's stored predictions, newest first (the last 50)."""
        checked = _checked_user(request, user_id)
        rows = await self._read(self._stored_predictions, checked)
        return schemas.UserPredictionsView(user_id=checked, predictions=rows)

    def _stored_predictions(self, user_id: str) -> list[schemas.StoredPrediction]:
        self.features.student_rows(user_id, ())  # 404 for an unknown student
        table = ModelPrediction.__table__
        query = (
            select(
                table.c.created_at,
                table.c.model_name,
                table.c.model_version,
                table.c.request_id,
                table.c.latency_ms,
                table.c.response,
            )
            .where(table.c.user_id == user_id)
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(STORED_PREDICTIONS)
        )
        with self.predictions.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
        return [schemas.StoredPrediction.model_validate(dict(r)) for r in found]

    async def _view(self, request: Request, key: str, body: BaseModel, predict: Predictor) -> Any:
        """A model's response inside a view (logged like a prediction route)."""
        prediction = await self.predict(key, body, predict, request.state.request_id)
        return prediction.response


def _report_served(served: ServedModel, before: ServedModel | None) -> None:
    """The served-version gauge when a model is swapped in."""
    replaced = before.version if before is not None else None
    metrics.record_served(served.key, served.name, served.version, replaced)


def _principal(scope: Any) -> Principal:
    principal = scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):  # the gateway authenticates every /api route
        raise ServingError("unauthenticated request reached a route")
    return principal


def _checked_user(request: Request, user_id: str) -> str:
    """The path's user_id, if well-formed and readable by the caller."""
    try:
        schemas.ProgressRequest(user_id=user_id)
    except ValueError as exc:
        raise NotFoundError(f"user_id: no student {user_id!r}", "user_id") from exc
    _principal(request.scope).require_user(user_id)
    return user_id


async def _current_service() -> Any:
    """BentoML's `get_current_service` as a coroutine. BentoML gives each GET view's
    `self` that function as a FastAPI dependency, and FastAPI runs a plain function in its
    thread pool: a thread hop per request, a third of `/models/status`'s CPU."""
    return bentoml.get_current_service()


views.dependency_overrides[bentoml.get_current_service] = _current_service


@views.exception_handler(ServingError)
async def _serving_error(request: Request, exc: ServingError) -> Any:
    return from_serving_error(exc, getattr(request.state, "request_id", None))


class StatusFastPath:
    """Answers `GET /api/v1/ml/models/status` once the gateway has let it through
    (authenticated, rate-limited, logged), straight from the service's `status`: BentoML's
    routing into the mounted FastAPI app, its dependency solving and its response
    validation cost about twice the document itself, and ops poll this route under full
    load. The FastAPI route stays as its OpenAPI entry and gives the same document."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == STATUS_ROUTE and scope["method"] == "GET":
            document = bentoml.get_current_service().status().model_dump_json()
            response = Response(document, media_type="application/json")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Readiness:
    """Answers `GET /readyz` with each model's state (`schemas.Readiness`): 200 when every
    required model is served, 503 otherwise. BentoML's own `/readyz` says only yes or no
    (from `__is_ready__`, which gives the same verdict)."""

    PATH = "/readyz"

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.PATH and scope["method"] == "GET":
            document = await bentoml.get_current_service().readiness()
            status = 200 if document.ready else 503
            response = Response(document.model_dump_json(), status, media_type="application/json")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class DocsWithErrors:
    """Answers `/docs.json` with BentoML's OpenAPI document plus the error responses every
    protected route can give, in the one error shape (`schemas.with_error_responses`), so
    clients and Schemathesis see the whole contract. Built once: the routes are static."""

    PATH = "/docs.json"

    def __init__(self, app: Any) -> None:
        self.app = app
        self._spec: dict[str, Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.PATH and scope["method"] == "GET":
            if self._spec is None:
                spec = PrepIQService.openapi_spec.asdict()  # type: ignore[attr-defined]
                self._spec = schemas.with_error_responses(spec)
            await JSONResponse(self._spec)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Outermost first: readiness answers its own 503 (the gateway would reshape it into an
# error), then the gateway in front of everything else.
PrepIQService.add_asgi_middleware(Readiness)  # type: ignore[attr-defined]
PrepIQService.add_asgi_middleware(Gateway, settings=SETTINGS)  # type: ignore[attr-defined]
PrepIQService.add_asgi_middleware(DocsWithErrors)  # type: ignore[attr-defined]
PrepIQService.add_asgi_middleware(StatusFastPath)  # type: ignore[attr-defined]
