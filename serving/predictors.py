"""From a request to a response for each model: build the input (from the source for a
`user_id`, else from the body), run the model, shape its output. Plain functions, run in
the service's inference threads; they know nothing of HTTP."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from features import focus, progress, recommend
from features.focus import FEATURE_COLUMNS
from features.questions import rows_for_texts
from serving import schemas
from serving.errors import InvalidInputError, NotFoundError
from serving.models import ServedModel
from serving.online_features import OnlineFeatures
from training.progress_forecaster.inference import output_column


def forest_proba(forest: Any, x: np.ndarray) -> np.ndarray:
    """A fitted sklearn forest classifier's `predict_proba`, computed as sklearn computes
    it with one job (each tree's probabilities added in order, then divided by the tree
    count) but without joblib's dispatch per tree and the per-call input checks: about
    0.5 ms instead of 5 ms for a student's rows (50 trees)."""
    rows = np.ascontiguousarray(x, dtype=np.float32)
    classes = int(forest.n_classes_)
    total = np.zeros((rows.shape[0], classes), dtype=np.float64)
    for tree in forest.estimators_:
        # What the tree's predict_proba(check_input=False) returns, minus its checks.
        total += tree.tree_.predict(rows)[:, :classes]
    total /= len(forest.estimators_)
    return total


_FAST_LOCK = threading.Lock()
FAST_CHECKED = "_prepiq_fast_checked"  # set on a forest once `use_fast_forest` judged it


def fast_forest_pending(model: ServedModel) -> bool:
    """True while the model's forest has not been judged by `use_fast_forest` yet (False
    for a model that is no sklearn forest): the request path builds the check's rows only
    then, not on every request."""
    forest = getattr(model.model, "estimator", None)
    return isinstance(forest, RandomForestClassifier | ExtraTreesClassifier) and not hasattr(
        forest, FAST_CHECKED
    )


def use_fast_forest(model: ServedModel, x: np.ndarray) -> None:
    """Give the model's forest (`model.model.estimator`) the exact fast `forest_proba`,
    once per loaded forest, only after checking on `x` (the first request's rows) that it
    returns what sklearn returns, bit for bit; otherwise leave sklearn's in place. The
    verdict is kept on the forest itself, so a reloaded model is judged afresh."""
    if not fast_forest_pending(model):
        return
    forest = model.model.estimator
    with _FAST_LOCK:
        if hasattr(forest, FAST_CHECKED):
            return
        sklearns = forest.predict_proba
        same = (
            forest.n_outputs_ == 1
            and bool(np.isfinite(x).all())
            and np.array_equal(forest_proba(forest, x), sklearns(x))
        )

        def fast(rows: Any) -> np.ndarray:
            matrix = np.asarray(rows)
            if not np.isfinite(matrix).all():  # sklearn's own checks and missing-value path
                return np.asarray(sklearns(rows))
            return forest_proba(forest, matrix)

        if same:
            forest.predict_proba = fast
        setattr(forest, FAST_CHECKED, same)


@dataclass(frozen=True)
class Prediction:
    """A response and what it was computed from (for the prediction log)."""

    response: BaseModel
    inputs_digest: str
    user_id: str | None


def inputs_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of the model input: its column names and values in order (the builders
    give their rows in a fixed order). Hashes each column's bytes, numbers as they are
    and anything else as text, which costs a tenth of pandas' per-row hashing."""
    return columns_digest((str(name), frame[name].to_numpy()) for name in frame.columns)


def columns_digest(columns: Iterable[tuple[str, np.ndarray]]) -> str:
    """`inputs_digest` of the frame these (name, values) columns would make, in order."""
    digest = hashlib.sha256()
    for name, values in columns:
        digest.update(name.encode())
        if values.dtype.kind in "biuf":
            digest.update(np.ascontiguousarray(values).tobytes())
        else:
            digest.update("\x1f".join(map(str, values)).encode())
    return digest.hexdigest()


def served_by(model: ServedModel) -> schemas.ServedBy:
    return schemas.ServedBy(name=model.name, version=model.version)


def predict_progress(
    model: ServedModel, features: OnlineFeatures, request: schemas.ProgressRequest
) -> Prediction:
    """Completion now and per horizon (median and the q0.1-q0.9 interval)."""
    window_days = int(model.model.window_days)
    if request.user_id is not None:
        found = features.student_inputs("progress", request.user_id, window_days)
        user_id = request.user_id
        return found.output(
            memo_key(model), lambda inputs: progress_forecast(model, inputs, user_id)
        )
    assert request.inputs is not None  # the schema asks for one of the two
    given = request.inputs
    days = pd.DataFrame([d.model_dump() for d in given.days])
    _refuse_repeats(days["day"], "inputs.days.{}.day", "day given twice")
    static = {
        "days_to_exam": progress.NO_EXAM_DAYS if given.days_to_exam is None else given.days_to_exam,
        "days_since_join": given.days_since_join,
        "topics_total": given.topics_total,
    }
    return progress_forecast(model, progress.sequence_from_days(days, static, window_days), None)


def memo_key(model: ServedModel, *options: Hashable) -> Hashable:
    """What a kept output is keyed by (a student's in `StudentInputs.output`, a subject's
    ranking in `SUBJECT_RANKINGS`): the served model object (a reload loads a new one)
    and what else the output depends on."""
    return (model.bento_tag, id(model.model), *options)


def progress_forecast(model: ServedModel, inputs: pd.DataFrame, user_id: str | None) -> Prediction:
    """The forecaster's answer for one student's daily sequence."""
    row = model.predict(inputs).iloc[0]
    forecaster = model.model.forecaster
    low, high = min(forecaster.quantiles), max(forecaster.quantiles)
    median = sorted(forecaster.quantiles)[len(forecaster.quantiles) // 2]
    forecasts = [
        schemas.CompletionForecast(
            horizon_days=int(h),
            completion_percent=round(float(row[output_column(median, h)]), 2),
            low_percent=round(float(row[output_column(low, h)]), 2),
            high_percent=round(float(row[output_column(high, h)]), 2),
        )
        for h in forecaster.horizons
    ]
    response = schemas.ProgressResponse(
        user_id=user_id,
        completion_now=round(float(row["completion_now"]), 2),
        forecasts=forecasts,
        model=served_by(model),
    )
    return Prediction(response, inputs_digest(inputs), user_id)


def _refuse_repeats(values: pd.Series, field: str, message: str) -> None:
    """InvalidInputError naming the first repeated value's field (`field` with its index)."""
    repeated = values.duplicated().to_numpy()
    if repeated.any():
        named = field.format(int(np.flatnonzero(repeated)[0]))
        raise InvalidInputError(f"{named}: {message}", named)


def predict_focus_areas(
    model: ServedModel, features: OnlineFeatures, request: schemas.FocusAreasRequest
) -> Prediction:
    """Every answered topic's weak probability and suggestions, by priority."""
    if request.user_id is not None:
        found = features.student_inputs("focus", request.user_id)
        user_id = request.user_id
        return found.output(
            memo_key(model), lambda inputs: stored_focus_areas(model, features, inputs, user_id)
        )
    assert request.topics is not None  # the schema asks for one of the two
    topics = request.topics
    ids = np.array([t.topic_id for t in topics], dtype=np.int64)
    _refuse_repeats(pd.Series(ids), "topics.{}.topic_id", "topic given twice")
    # The body's statistics straight into the feature matrix (no frame row by row).
    x = np.array([[getattr(t, c) for c in FEATURE_COLUMNS] for t in topics], dtype=float)
    digest = columns_digest([("topic_id", ids), *zip(FEATURE_COLUMNS, x.T, strict=True)])
    return focus_areas(model, features, x, {"topic_id": ids}, digest, None)


def focus_areas(
    model: ServedModel,
    features: OnlineFeatures,
    x: np.ndarray,
    keys: dict[str, np.ndarray],
    digest: str,
    user_id: str | None,
) -> Prediction:
    """The focus-area model's answer for one student's topics (feature matrix `x`, topic
    ids and user ids in `keys`), by the pyfunc's array entry point (`answer`, what its
    `predict` wraps in a frame), highest priority first."""
    areas: list[schemas.FocusArea] = []
    if len(x):
        if fast_forest_pending(model):  # the first request only
            use_fast_forest(model, x)
        out = model.model.answer(x, keys)
        order = np.argsort(out["priority"], kind="stable")
        areas = named_topics({c: out[c][order] for c in out}, features, schemas.FocusArea)
    response = schemas.FocusAreasResponse(
        user_id=user_id, focus_areas=areas, model=served_by(model)
    )
    return Prediction(response, digest, user_id)


def stored_focus_areas(
    model: ServedModel, features: OnlineFeatures, inputs: pd.DataFrame, user_id: str
) -> Prediction:
    """`focus_areas` of a student's `features.focus.topic_test_stats` rows."""
    keys = {c: inputs[c].to_numpy() for c in ("user_id", "topic_id")}
    x = focus.feature_matrix(inputs)
    return focus_areas(model, features, x, keys, inputs_digest(inputs), user_id)


Topical = TypeVar("Topical", schemas.FocusArea, schemas.TopicRecommendation)


def named_topics(
    columns: Mapping[str, np.ndarray | pd.Series], features: OnlineFeatures, item: type[Topical]
) -> list[Topical]:
    """One `item` per row of a model's output columns (in order; columns `item` lacks are
    ignored), with the topic's name and subject from the catalogue."""
    wanted = {c: values.tolist() for c, values in columns.items() if c in item.model_fields}
    found = []
    for i, topic in enumerate(wanted["topic_id"]):
        name, subject = features.topic(int(topic))
        record = {c: values[i] for c, values in wanted.items()}
        found.append(item.model_validate(record | {"topic_name": name, "subject_id": subject}))
    return found


def recommend_topics(
    model: ServedModel, features: OnlineFeatures, request: schemas.RecommendRequest
) -> Prediction:
    """The student's top-k topics (of one subject when asked)."""
    if request.user_id is not None:
        found = features.student_inputs("recommend", request.user_id)
        key = memo_key(model, request.subject_id, request.top_k)
        return found.output(key, lambda inputs: recommendations(model, features, inputs, request))
    assert request.inputs is not None  # the schema asks for one of the two
    inputs = given_recommend_inputs(features, request.inputs)
    return recommendations(model, features, inputs, request)


def recommendations(
    model: ServedModel,
    features: OnlineFeatures,
    inputs: pd.DataFrame,
    request: schemas.RecommendRequest,
) -> Prediction:
    """The recommender's top-k for one student's candidate topics."""
    if request.subject_id is not None:
        inputs = inputs[inputs["subject_id"] == request.subject_id]
        if inputs.empty:
            raise InvalidInputError(
                f"subject_id: the student is not enrolled in subject {request.subject_id}",
                "subject_id",
            )
    ranked: list[schemas.TopicRecommendation] = []
    if not inputs.empty:
        # The recommender's cost is per call, not per row: concurrent requests share one.
        out = model.predict_shared(inputs.reset_index(drop=True)).head(request.top_k)
        columns = {str(c): out[c] for c in out.columns}
        ranked = named_topics(columns, features, schemas.TopicRecommendation)
    response = schemas.RecommendResponse(
        user_id=request.user_id, recommendations=ranked, model=served_by(model)
    )
    return Prediction(response, inputs_digest(inputs), request.user_id)


def given_recommend_inputs(
    features: OnlineFeatures, given: schemas.RecommendInputs
) -> pd.DataFrame:
    """`features.recommend.candidate_topics` rows for a student described in the body:
    their enrolments, preferences and practice, with the catalogue's topics and topic
    facts. A subject, topic or repeat the catalogue cannot place is refused, naming it."""
    catalogue = features.catalogue
    topics = catalogue.frames["topics"]
    known = set(topics["subject_id"].astype(int))
    for index, subject in enumerate(given.subject_ids):
        if subject not in known:
            field = f"inputs.subject_ids.{index}"
            raise NotFoundError(f"{field}: no subject {subject}", field)
    _refuse_repeats(pd.Series(given.subject_ids), "inputs.subject_ids.{}", "subject given twice")
    enrolled = set(topics.loc[topics["subject_id"].isin(given.subject_ids), "id"].astype(int))
    practised = [p.topic_id for p in given.practice]
    for template, ids in (
        ("inputs.practice.{}.topic_id", practised),
        ("inputs.interested_topic_ids.{}", given.interested_topic_ids),
    ):
        for index, topic in enumerate(ids):
            if topic not in enrolled:
                field = template.format(index)
                message = f"{field}: topic {topic} is not in an enrolled subject"
                raise InvalidInputError(message, field)
    _refuse_repeats(
        pd.Series(practised, dtype=int), "inputs.practice.{}.topic_id", "topic given twice"
    )
    student = "-"
    context = recommend.context_rows(
        pd.DataFrame({"user_id": student, "subject_id": given.subject_ids}),
        topics,
        {(student, topic) for topic in given.interested_topic_ids},
        pd.Series({student: given.preferred_difficulty}),
    )
    columns = ["topic_id", *recommend.INTERACTION_COLUMNS]
    practice = recommend.typed_interactions(
        pd.DataFrame([p.model_dump() for p in given.practice], columns=columns)
    )
    practice.insert(0, "user_id", student)
    return recommend.assemble_candidates(context, practice, catalogue.topic_content)


class SubjectRankings:
    """A subject's ranked candidates by (model, subject, catalogue copy): without given
    texts the ranker's input is the subject's cached candidates, which change only when
    the catalogue is refreshed, so its output is computed once per model and catalogue
    copy instead of on every request (a few hundred rows through the model)."""

    def __init__(self, entries: int = 256) -> None:
        self.entries = entries
        self._items: OrderedDict[Hashable, tuple[list[schemas.RankedQuestion], str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[list[schemas.RankedQuestion], str] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: tuple[list[schemas.RankedQuestion], str]) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


SUBJECT_RANKINGS = SubjectRankings()


def rank_questions(
    model: ServedModel, features: OnlineFeatures, request: schemas.RankQuestionsRequest
) -> Prediction:
    """The subject's questions (or the given texts) best first."""
    if request.questions is None:
        questions, digest = subject_ranking(model, features, request.subject_id)
        response = schemas.RankQuestionsResponse(
            subject_id=request.subject_id,
            questions=questions[: request.top_k],
            model=served_by(model),
        )
        return Prediction(response, digest, None)
    inputs = features.question_inputs(request.subject_id)
    # Scored next to the subject's own candidates: the ranker compares texts with the
    # papers up to the newest it sees among its input, which must be the latest.
    given = given_texts(inputs, request.questions)
    inputs = pd.concat([inputs, given], ignore_index=True)
    out = model.predict(inputs)
    ranked = pd.concat([inputs[["question_id", "topic_id", "text"]], out], axis=1)
    ranked = ranked.tail(len(request.questions)).reset_index(drop=True)
    ranked["rank"] = ranked["score"].rank(ascending=False, method="first").astype(int)
    ranked = ranked.sort_values("rank").head(request.top_k)
    response = schemas.RankQuestionsResponse(
        subject_id=request.subject_id,
        questions=[_ranked_question(r) for r in ranked.to_dict("records")],
        model=served_by(model),
    )
    return Prediction(response, inputs_digest(inputs), None)


def subject_ranking(
    model: ServedModel, features: OnlineFeatures, subject_id: int
) -> tuple[list[schemas.RankedQuestion], str]:
    """Every candidate of the subject ranked by the model, best first, and the input's
    digest (cached per model, subject and catalogue copy: see `SubjectRankings`)."""
    catalogue = features.catalogue
    key = memo_key(model, subject_id, catalogue.loaded_at)
    found = SUBJECT_RANKINGS.get(key)
    if found is not None:
        return found
    inputs = features.question_inputs(subject_id)
    out = model.predict(inputs)
    ranked = pd.concat([inputs[["question_id", "topic_id", "text"]], out], axis=1)
    ranked = ranked.sort_values("rank")
    result = ([_ranked_question(r) for r in ranked.to_dict("records")], inputs_digest(inputs))
    SUBJECT_RANKINGS.put(key, result)
    return result


def _ranked_question(record: dict[Any, Any]) -> schemas.RankedQuestion:
    question_id = record["question_id"]
    return schemas.RankedQuestion(
        rank=int(record["rank"]),
        question_id=None if pd.isna(question_id) else int(question_id),
        topic_id=int(record["topic_id"]),
        text=str(record["text"]),
        probability=float(record["probability"]),
        repeat_probability=float(record["repeat_probability"]),
        score=float(record["score"]),
    )


def given_texts(candidates: pd.DataFrame, texts: list[schemas.QuestionText]) -> pd.DataFrame:
    """Ranker rows for the given texts: `features.questions.rows_for_texts`, with a
    topic outside the subject refused (naming the field)."""
    known_topics = set(candidates["topic_id"].astype(int))
    for index, question in enumerate(texts):
        if question.topic_id not in known_topics:
            raise InvalidInputError(
                f"questions.{index}.topic_id: topic {question.topic_id} has no past "
                "questions in this subject",
                f"questions.{index}.topic_id",
            )
    return rows_for_texts(candidates, [(q.text, q.topic_id) for q in texts]).reset_index(drop=True)
