"""Requests queued while a model is busy share one call (`serving.batching`): each gets
exactly what a call of its own gives (the served recommender, bit for bit), fewer calls
are made under load, and one bad input fails alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pandas as pd

from serving.batching import BusyBatcher


def per_student_run(calls: list[int]) -> object:
    """A model-like function that treats students independently and takes a while."""

    def run(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(frame["user_id"].nunique())
        if (frame["x"] < 0).any():
            raise ValueError("x: negative")
        time.sleep(0.02)
        out = frame.assign(total=frame.groupby("user_id")["x"].transform("sum"))
        return out.sort_values(["user_id", "x"], ascending=[True, False]).reset_index(drop=True)

    return run


def student(user: str, *values: float) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [user] * len(values), "x": list(values)})


def test_requests_queued_while_busy_share_a_call_and_get_their_own_rows() -> None:
    calls: list[int] = []
    run = per_student_run(calls)
    batcher = BusyBatcher(run)  # type: ignore[arg-type]
    # Two requests for the same student stay apart (each its own key in the batch).
    frames = [student(f"u{i % 10}", float(i), float(i + 1), 0.5) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(batcher, frames))
    for frame, out in zip(frames, outs, strict=True):
        pd.testing.assert_frame_equal(out, run(frame))  # type: ignore[operator]
    assert batcher.requests == 40 and batcher.calls < 20
    assert max(calls) > 1  # some calls ran several requests


def test_an_idle_model_runs_a_request_at_once_alone() -> None:
    calls: list[int] = []
    batcher = BusyBatcher(per_student_run(calls))  # type: ignore[arg-type]
    batcher(student("a", 1.0))
    batcher(student("b", 2.0))
    assert calls == [1, 1] and batcher.calls == 2


def test_a_bad_input_fails_alone_and_the_batcher_keeps_working() -> None:
    calls: list[int] = []
    batcher = BusyBatcher(per_student_run(calls))  # type: ignore[arg-type]
    frames = [student(f"u{i}", -1.0 if i == 3 else float(i)) for i in range(12)]
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = batcher(frames[i])
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(results[3], ValueError) and "x: negative" in str(results[3])
    assert all(isinstance(results[i], pd.DataFrame) for i in range(12) if i != 3)
    assert isinstance(batcher(student("z", 1.0)), pd.DataFrame)


def test_rows_of_several_students_run_alone_as_given() -> None:
    calls: list[int] = []
    batcher = BusyBatcher(per_student_run(calls))  # type: ignore[arg-type]
    both = pd.concat([student("a", 1.0), student("b", 2.0)], ignore_index=True)
    assert len(batcher(both)) == 2 and calls == [2] and batcher.calls == 0


def test_the_served_recommender_gives_each_request_what_a_call_of_its_own_gives(
    served_models: str,
) -> None:
    from core.config import get_settings
    from core.database import get_engine
    from serving.models import ModelSet
    from serving.online_features import OnlineFeatures

    tracking_uri = get_settings().resolved_tracking_uri
    models = ModelSet(tracking_uri)
    models.refresh()
    model = models.get("topic-recommender")
    assert model is not None
    now = datetime.now(UTC)
    engine = get_engine(served_models)
    online = OnlineFeatures(engine, 300, cache_seconds=0, clock=lambda: now)
    users = pd.read_sql("SELECT DISTINCT user_id FROM tests ORDER BY user_id", engine)["user_id"]
    inputs = [online.recommend_inputs(str(u)) for u in users[:48]]
    alone = [model.predict(frame) for frame in inputs]
    with ThreadPoolExecutor(12) as pool:
        shared = list(pool.map(model.predict_shared, [*inputs, *inputs[:6]]))
    for frame, out in zip([*alone, *alone[:6]], shared, strict=True):
        pd.testing.assert_frame_equal(out, frame, check_exact=True)
    batcher = model.batcher
    assert batcher.requests == 54 and batcher.calls < 54  # 12 threads: some calls shared
