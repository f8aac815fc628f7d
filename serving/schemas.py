"""Request and response bodies of the serving API. Every field has a description and the
models carry examples, so `/docs.json` documents the whole contract with the app.

Requests are strict: unknown fields, NaN and infinite numbers, empty or oversized lists,
ids past the database's INTEGER and days outside a sane calendar range are refused with a
message naming the field (before any model runs). Every date-time answered carries its
offset (UTC)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

EXAMPLE_USER = "06055a97-61f4-406b-b091-a5b5a8586e77"
MAX_TOPICS = 500  # more than any syllabus holds: a bigger list is a client bug
MAX_QUESTIONS = 100
MAX_DAYS = 366  # a year of days: longer than any forecaster window
# Every id column of the source is an INTEGER: a bigger id names nothing, and would
# overflow the int64 frames the features are built in.
MAX_ID = 2**31 - 1
# Days a student can have used the app on; outside them pandas' nanosecond timestamps
# overflow (year 1677 / 2262), and no PrepIQ student studied in either.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)
MAX_ANSWERS = 1_000_000.0  # answers on one topic: far more than any student gives
MAX_AGE_DAYS = 36_500.0  # a century


class Strict(BaseModel):
    """Refuses unknown fields and non-finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


UserId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The student's id (Supabase auth user id).",
        examples=[EXAMPLE_USER],
    ),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Answers = Annotated[float, Field(ge=0, le=MAX_ANSWERS)]
Age = Annotated[float, Field(ge=0, le=MAX_AGE_DAYS)]


def _with_offset(value: datetime) -> datetime:
    """A naive time is UTC (SQLite's CURRENT_TIMESTAMP); answer it with its offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_with_offset)]


def exactly_one_of(*fields: tuple[str, str]) -> dict[str, Any]:
    """JSON Schema of "exactly one of these fields, not null" (`(name, JSON type)` pairs):
    what each request's `_one_source` validator enforces, stated in /docs.json."""
    return {
        "oneOf": [
            {"required": [name], "properties": {name: {"type": kind}}} for name, kind in fields
        ]
    }


class ServedBy(BaseModel):
    """Which model answered."""

    name: str = Field(description="Registered model name.", examples=["prepiq-focus-area"])
    version: str = Field(description="Registered model version.", examples=["3"])


# -- progress ------------------------------------------------------------------------------


class ProgressDay(Strict):
    """One day of a student's app history, for callers that send the inputs themselves
    (what `features.progress.daily_sequences` builds from the source for a day)."""

    day: date = Field(ge=FIRST_DAY, le=LAST_DAY, description="The day (2000-01-01 to 2100-12-31).")
    study_minutes: float = Field(ge=0, le=1440, description="Minutes studied that day.")
    logins: float = Field(ge=0, le=1000, description="App logins that day.")
    streak_days: float = Field(ge=0, le=10_000, description="Study streak on that day.")
    test_score: float | None = Field(
        default=None, ge=0, le=100, description="Mean score of the day's tests; null: none."
    )
    completion_percent: float = Field(
        ge=0, le=100, description="Syllabus completion recorded by that day (0-100)."
    )


class ProgressInputs(Strict):
    """A student's recent days and facts: the forecaster's inputs themselves. The window
    ends at the latest given day; a missing day counts as no activity with completion
    carried forward."""

    days: list[ProgressDay] = Field(
        min_length=1, max_length=MAX_DAYS, description="Recent days, one per date."
    )
    days_to_exam: float | None = Field(
        default=None, ge=-3650, le=3650, description="Days to the exam; null: not set."
    )
    days_since_join: float = Field(ge=0, le=36_500, description="Days since the student joined.")
    topics_total: float = Field(ge=0, le=100_000, description="Topics in the enrolled syllabus.")


class ProgressRequest(Strict):
    """Forecast a student's syllabus completion: give `user_id` (rows read from the
    source) or `inputs` (the student's days themselves), not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"user_id": EXAMPLE_USER},
            **exactly_one_of(("user_id", "string"), ("inputs", "object")),
        }
    )
    user_id: UserId | None = None
    inputs: ProgressInputs | None = Field(default=None, description="Instead of a user_id.")

    @model_validator(mode="after")
    def _one_source(self) -> ProgressRequest:
        if (self.user_id is None) == (self.inputs is None):
            raise ValueError("give exactly one of user_id or inputs")
        return self


class CompletionForecast(BaseModel):
    """Completion forecast at one horizon, with its 80% interval."""

    horizon_days: int = Field(description="Days from today.", examples=[30])
    completion_percent: float = Field(description="Median forecast (0-100).", examples=[71.5])
    low_percent: float = Field(description="Lower end of the 80% interval (q0.1).")
    high_percent: float = Field(description="Upper end of the 80% interval (q0.9).")


class ProgressResponse(BaseModel):
    """Completion now and forecast at each horizon the model was trained for."""

    user_id: str | None = Field(description="The student, when asked by user_id.")
    completion_now: float = Field(description="Completion recorded up to today (0-100).")
    forecasts: list[CompletionForecast] = Field(description="One per horizon, nearest first.")
    model: ServedBy


# -- focus areas ---------------------------------------------------------------------------


class TopicTestStats(Strict):
    """One topic's test statistics for a student (`features.focus.topic_test_stats`), for
    callers that send the inputs themselves."""

    topic_id: Id = Field(description="Topic.")
    attempts: Answers = Field(description="Answers given on the topic.")
    accuracy: float = Field(ge=0, le=1, description="Share of right answers.")
    smoothed_accuracy: float = Field(ge=0, le=1, description="Accuracy shrunk to the expected.")
    accuracy_last_14d: float = Field(ge=0, le=1, description="Smoothed accuracy, last 14 days.")
    accuracy_last_30d: float = Field(ge=0, le=1, description="Smoothed accuracy, last 30 days.")
    attempts_last_30d: Answers = Field(description="Answers in the last 30 days.")
    accuracy_trend: float = Field(ge=-1, le=1, description="Last 30 days minus overall.")
    difficulty_adjusted_accuracy: float = Field(
        ge=-1, le=1, description="Right answers minus those expected at the difficulty."
    )
    mean_difficulty: float = Field(ge=1, le=5, description="Mean difficulty answered (1-5).")
    seconds_per_mark: float = Field(ge=0, le=86_400, description="Median seconds per mark.")
    slow_answer_share: float = Field(ge=0, le=1, description="Share slower than 1.5x own pace.")
    rushed_wrong_share: float = Field(ge=0, le=1, description="Share quick and wrong.")
    repeated_wrong_option_share: float = Field(
        ge=0, le=1, description="Share repeating a wrong option."
    )
    skip_share: float = Field(ge=0, le=1, description="Share skipped.")
    days_since_last_attempt: Age = Field(description="Days since the last answer.")
    mock_share: float = Field(ge=0, le=1, description="Share answered in mock papers.")
    syllabus_weight: float = Field(ge=0, le=1, description="Topic's share of its subject.")
    student_adjusted_accuracy: float = Field(
        ge=-1, le=1, description="The student's difficulty-adjusted level over all topics."
    )
    relative_adjusted_accuracy: float = Field(
        ge=-2, le=2, description="The topic's adjusted accuracy minus the student's level."
    )
    student_shrunk_accuracy: float = Field(
        ge=0, le=1, description="Accuracy shrunk toward the student's own level."
    )
    recency_weighted_accuracy: float = Field(
        ge=0, le=1, description="Accuracy with answers weighted by a 21-day half-life."
    )
    adjusted_accuracy_last_30d: float = Field(
        ge=-1, le=1, description="Difficulty-adjusted accuracy over the last 30 days."
    )
    accuracy_change_30d: float = Field(
        ge=-2, le=2, description="Adjusted accuracy, last 30 days minus the 30 before."
    )
    hard_question_accuracy: float = Field(
        ge=0, le=1, description="Accuracy on the topic's hard questions (rated 4-5)."
    )
    answers_per_week: Answers = Field(description="Answers per week since the first.")


class FocusAreasRequest(Strict):
    """Weak topics of a student: give `user_id` (rows read from the source) or `topics`
    (the inputs themselves), not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"user_id": EXAMPLE_USER},
            **exactly_one_of(("user_id", "string"), ("topics", "array")),
        }
    )
    user_id: UserId | None = None
    topics: list[TopicTestStats] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOPICS,
        description="Per-topic test statistics, instead of a user_id.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> FocusAreasRequest:
        if (self.user_id is None) == (self.topics is None):
            raise ValueError("give exactly one of user_id or topics")
        return self


class FocusArea(BaseModel):
    """One topic judged by the focus-area model, with what to do about it."""

    topic_id: int
    topic_name: str | None = Field(description="Topic name from the catalogue.")
    subject_id: int | None = Field(description="Subject of the topic.")
    weak_probability: Probability = Field(description="P(accuracy below 50% next 45 days).")
    is_weak: bool = Field(description="Probability at or above the model's threshold.")
    expected_score_gain: float = Field(
        description="Expected exam-score points gained by bringing the topic to 70%."
    )
    practice: str = Field(description="What to practise, from the answer patterns.")
    priority: int = Field(ge=1, description="Order to take the topics in (1 = first).")


class FocusAreasResponse(BaseModel):
    """Every topic the student has answered, by priority."""

    user_id: str | None = Field(description="The student, when asked by user_id.")
    focus_areas: list[FocusArea]
    model: ServedBy


# -- topic recommendations ---------------------------------------------------------------


class TopicPractice(Strict):
    """How a student has practised one topic (`features.recommend.interactions`), for
    callers that send the inputs themselves."""

    topic_id: Id = Field(description="Topic.")
    attempts: float = Field(ge=1, le=MAX_ANSWERS, description="Answers given on the topic.")
    accuracy: float = Field(ge=0, le=1, description="Share of right answers.")
    attempts_last_30d: Answers = Field(description="Answers in the last 30 days.")
    accuracy_last_30d: float | None = Field(
        default=None, ge=0, le=1, description="Share right in the last 30 days; null: none."
    )
    accuracy_gain: float = Field(
        ge=-1, le=1, description="Recent minus earlier accuracy, both shrunk toward 0.5."
    )
    days_since_last_attempt: Age = Field(description="Days since the last answer.")


class RecommendInputs(Strict):
    """A student's enrolments, preferences and practice: the recommender's inputs
    themselves (topic facts come from the catalogue)."""

    subject_ids: list[Id] = Field(
        min_length=1, max_length=50, description="Subjects the student is enrolled in."
    )
    practice: list[TopicPractice] = Field(
        default_factory=list,
        max_length=MAX_TOPICS,
        description="Topics practised so far (empty for a new student).",
    )
    interested_topic_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_TOPICS, description="Topics marked interesting."
    )
    preferred_difficulty: Literal["easy", "medium", "hard"] = Field(
        default="medium", description="The student's preferred question difficulty."
    )


class RecommendRequest(Strict):
    """Topics a student should study next: give `user_id` (rows read from the source) or
    `inputs` (enrolments, preferences and practice themselves), not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"user_id": EXAMPLE_USER, "top_k": 5},
            **exactly_one_of(("user_id", "string"), ("inputs", "object")),
        }
    )
    user_id: UserId | None = None
    inputs: RecommendInputs | None = Field(default=None, description="Instead of a user_id.")
    top_k: int = Field(default=5, ge=1, le=50, description="How many topics to return.")
    subject_id: Id | None = Field(default=None, description="Only topics of this enrolled subject.")

    @model_validator(mode="after")
    def _one_source(self) -> RecommendRequest:
        if (self.user_id is None) == (self.inputs is None):
            raise ValueError("give exactly one of user_id or inputs")
        return self


class TopicRecommendation(BaseModel):
    """One recommended topic."""

    topic_id: int
    topic_name: str | None = Field(description="Topic name from the catalogue.")
    subject_id: int | None = Field(description="Subject of the topic.")
    rank: int = Field(ge=1, description="1 = study first.")
    confidence: Probability = Field(description="Calibrated P(the student improves on it).")
    reason: str = Field(description="Why it is recommended.", examples=["weak area: 42%"])


class RecommendResponse(BaseModel):
    """The student's top topics, best first (mastered topics left out)."""

    user_id: str | None = Field(description="The student, when asked by user_id.")
    recommendations: list[TopicRecommendation]
    model: ServedBy


# -- question ranking --------------------------------------------------------------------


class QuestionText(Strict):
    """A question to rank that may not be in the past papers."""

    text: str = Field(min_length=3, max_length=4000, description="The question as printed.")
    topic_id: Id = Field(description="Topic the question belongs to.")


class RankQuestionsRequest(Strict):
    """Rank a subject's past questions (or given texts) by how likely they are to come up
    in the next paper."""

    model_config = ConfigDict(json_schema_extra={"example": {"subject_id": 1, "top_k": 20}})
    subject_id: Id = Field(description="Subject whose next paper is ranked for.")
    top_k: int = Field(default=20, ge=1, le=500, description="How many questions to return.")
    questions: list[QuestionText] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUESTIONS,
        description="Texts to rank instead of the subject's past questions.",
    )


class RankedQuestion(BaseModel):
    """One ranked question."""

    rank: int = Field(ge=1, description="1 = most likely to come up.")
    question_id: int | None = Field(description="Latest past question with this text, if any.")
    topic_id: int
    text: str
    probability: Probability = Field(description="P(the question or its topic is asked).")
    repeat_probability: Probability = Field(description="P(this very question is asked).")
    score: float = Field(description="Ranking score: P(topic) + 2 P(question).")


class RankQuestionsResponse(BaseModel):
    """Questions best first."""

    subject_id: int
    questions: list[RankedQuestion]
    model: ServedBy


# -- models status -----------------------------------------------------------------------


class LatencyMs(BaseModel):
    """Latency percentiles of the recent requests (milliseconds), null before any."""

    p50: float | None
    p95: float | None
    p99: float | None


class ModelStatus(BaseModel):
    """What one served model is and how it is doing."""

    key: str = Field(examples=["focus-area"])
    name: str = Field(description="Registered model name.")
    version: str = Field(description="Registered version being served.")
    aliases: list[str] = Field(description="Registry aliases of that version (champion, ...).")
    run_id: str = Field(description="MLflow run that trained it.")
    data_version: str | None = Field(description="DVC hash of the snapshot it trained on.")
    trained_at: Timestamp | None
    loaded_at: Timestamp
    main_metric: str
    main_metric_value: float | None = Field(description="Hold-out value of the main metric.")
    bento_tag: str = Field(description="Entry of the BentoML model store.")
    requests: int = Field(description="Requests answered since loaded.")
    errors: int = Field(description="Requests that failed since loaded.")
    latency_ms: LatencyMs


class MaterialisedInputsStatus(BaseModel):
    """The store of per-student inputs built ahead of requests."""

    students: int = Field(description="Students tracked at the last refresh.")
    entries: int = Field(description="Inputs held, over every kind.")
    hits: int = Field(description="Requests answered from the store since start.")
    misses: int = Field(description="Requests that built their inputs themselves.")
    outputs_computed: int = Field(
        default=0, description="Model outputs computed from a stored input and kept with it."
    )
    outputs_reused: int = Field(
        default=0,
        description="Requests answered with a kept output (same student rows, same model, "
        "same options: the output the model would give again).",
    )
    last_refresh_seconds: float | None = Field(
        default=None, description="How long the last refresh took (null before the first)."
    )


class ModelAvailability(BaseModel):
    """Whether a model is served, which version, and why (not)."""

    key: str = Field(examples=["focus-area"])
    state: Literal["loading", "serving", "no_champion", "failed"] = Field(
        description="serving: a version answers; no_champion: the registry names none; "
        "failed: its champion (and the fallbacks) did not load; loading: at start."
    )
    version: str | None = Field(description="Registered version served, if any.")
    champion: str | None = Field(description="The registry's champion version, when known.")
    reason: str | None = Field(
        description="Why the champion is not what is served, or why nothing is."
    )
    since: Timestamp = Field(description="When the model entered this state.")


class SourceReadiness(BaseModel):
    """Whether the source database answered its last check."""

    reachable: bool
    reason: str | None = Field(description="Why not, when not reachable.")
    checked_at: datetime


class Readiness(BaseModel):
    """`/readyz`: 200 when every required model is served and the source database
    answers, else 503; each model's state."""

    ready: bool
    required: list[str] = Field(description="Model keys that must be served for ready.")
    models: list[ModelAvailability]
    source: SourceReadiness


class PredictionLogStatus(BaseModel):
    """This worker's prediction log (`serving.prediction_log`), since it started."""

    written: int = Field(description="Rows inserted into model_predictions.")
    pending: int = Field(description="Rows in memory waiting for the database.")
    spooled: int = Field(description="Rows on disk (durable) not yet in the database.")
    dropped: int = Field(description="Rows lost: memory buffer or spool full.")
    replayed: int = Field(description="Rows replayed from spools of dead workers.")
    last_error: str | None = Field(description="The last insert's error; null once one works.")


class ModelsStatusResponse(BaseModel):
    """Every served model."""

    ready: bool = Field(description="Every required model served (see /readyz).")
    started_at: Timestamp
    process_id: int = Field(description="The worker process that answered.")
    models: list[ModelStatus]
    availability: list[ModelAvailability] = Field(
        description="Every model, served or not, and why."
    )
    materialised_inputs: MaterialisedInputsStatus | None = Field(
        default=None, description="Null when the store is off."
    )
    prediction_log: PredictionLogStatus


# -- per-user views ----------------------------------------------------------------------


class CompletionRecord(BaseModel):
    """A recorded completion value."""

    recorded_on: date
    completion_percent: float


class UserProgressView(BaseModel):
    """Recorded completion history and the forecast."""

    user_id: str
    history: list[CompletionRecord] = Field(description="Last recorded values, oldest first.")
    forecast: ProgressResponse


class DashboardView(BaseModel):
    """Everything the app's dashboard shows, from the four models and the student's rows."""

    user_id: str
    display_name: str | None
    exam_date: date | None
    progress: ProgressResponse
    focus_areas: list[FocusArea] = Field(description="Weakest topics first (top 5).")
    recommendations: list[TopicRecommendation] = Field(description="Top 5 topics to study.")


class StoredPrediction(BaseModel):
    """A prediction made earlier for the student."""

    created_at: Timestamp
    model_name: str
    model_version: str
    request_id: str
    latency_ms: float
    response: dict[str, Any]


class UserPredictionsView(BaseModel):
    """The student's stored predictions, newest first."""

    user_id: str
    predictions: list[StoredPrediction]


class ReloadResponse(BaseModel):
    """Which models changed version on reload (this worker; the others follow the
    registry within their poll interval)."""

    reloaded: dict[str, str] = Field(description="Model key -> bento tag now served.")


class ErrorBody(BaseModel):
    """Every error the service returns has this shape."""

    error: str = Field(description="What went wrong, naming the field when it is input.")
    code: Literal[
        "invalid_input",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "too_large",
        "unsupported_media_type",
        "rate_limited",
        "overloaded",
        "timeout",
        "not_ready",
        "source_unavailable",
        "reload_failed",
        "internal",
    ]
    field: str | None = Field(default=None, description="The offending field, if any.")
    request_id: str | None = Field(default=None, description="Same as the X-Request-ID header.")


# -- the error responses in /docs.json -----------------------------------------------------

# Every error a protected route can answer, all in the `ErrorBody` shape (the gateway and
# the service guarantee it; BentoML's and FastAPI's own declarations say otherwise).
ERROR_RESPONSES: dict[int, str] = {
    400: "Invalid input: wrong type, missing or unknown field, NaN, empty or huge list.",
    401: "No credentials, or an invalid, expired or forged token or key (see WWW-Authenticate).",
    403: "A user token asking for another user's rows, or a non-admin on an admin route.",
    404: "Unknown student, subject or route.",
    413: "Request body larger than the limit (by Content-Length or as streamed).",
    415: "A request body that is not JSON (the Content-Type must be application/json).",
    422: "Invalid input (FastAPI's validation, in the same shape).",
    429: "Over the caller's rate limit (an unauthenticated caller's is by client address), "
    "or too many requests in flight (see Retry-After).",
    500: "Internal error (no details are given).",
    503: "The model is not served (no champion, or it failed to load), or a reload failed.",
    504: "No answer within the per-request timeout.",
}
ERROR_REF = "#/components/schemas/ErrorBody"
READINESS_REF = "#/components/schemas/Readiness"
PROTECTED_PATHS = "/api/"
METHODS = ("get", "put", "post", "delete", "patch")


def with_error_responses(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (the service's OpenAPI document) with every protected operation declaring
    the error responses above in the one error shape, and readiness its 503."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _reference_bodies(spec, schemas)
    for model in (ErrorBody, Readiness):
        document = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(document.pop("$defs", {}))
        schemas[model.__name__] = document
    error_content = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            # BentoML keys its responses by int: one key type, or "400" would appear twice.
            responses = {str(k): v for k, v in operation.get("responses", {}).items()}
            operation["responses"] = responses
            if path == "/readyz":
                readiness = {"application/json": {"schema": {"$ref": READINESS_REF}}}
                responses["200"] = {
                    "description": "Every required model is served.",
                    "content": readiness,
                }
                responses["503"] = {
                    "description": "A required model is not served.",
                    "content": readiness,
                }
            if not path.startswith(PROTECTED_PATHS):
                continue
            for status, description in ERROR_RESPONSES.items():
                response: dict[str, Any] = {"description": description, "content": error_content}
                if status == 429:
                    response["headers"] = {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying.",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    }
                if status == 401:
                    response["headers"] = {
                        "WWW-Authenticate": {
                            "description": 'The challenge (RFC 6750): `Bearer realm="prepiq"`, '
                            'with `error="invalid_token"` or `"invalid_request"` when a '
                            "credential was given and refused.",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^Bearer "},
                        }
                    }
                responses[str(status)] = response
    return spec


def _reference_bodies(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Point each BentoML API's request and response body at its model's component
    schema. BentoML inlines each body (titled `<Model>IODescriptor`) with `str | None`
    turned into plain `string` and the model's `oneOf` dropped, so the published
    contract would refuse the nulls answered and accepted; the component, built by
    pydantic from the model itself, says which fields take null and states the one-of
    rule of the requests."""
    for item in spec.get("paths", {}).values():
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            bodies = [operation.get("requestBody", {}), *operation.get("responses", {}).values()]
            for body in bodies:
                media = body.get("content", {}).get("application/json", {})
                title = str(media.get("schema", {}).get("title", ""))
                if title.endswith("IODescriptor") and title in schemas:
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}
