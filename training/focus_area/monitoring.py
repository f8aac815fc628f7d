"""The focus-area identifier in the monitoring flow (`pipelines.monitoring`): the drift of
the test statistics of the topics it answered about, and its served weak flags scored
against the label training uses once the label window has closed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import pandas as pd

from features import focus
from features.frames import SourceFrames
from training.focus_area.data import LABEL, examples_at
from training.focus_area.params import FocusAreaParams
from training.live import FeatureSet, LiveMonitoring, QualityLimit, latest_per_student, served_rows
from training.metrics import binary_classification


def served_topics(predictions: pd.DataFrame) -> pd.DataFrame:
    """(user_id, topic_id) pairs the focus-area model answered about."""
    pairs = [
        (user, int(area["topic_id"]))
        for user, _, response in served_rows(predictions)
        for area in response.get("focus_areas", [])
    ]
    return pd.DataFrame(pairs, columns=["user_id", "topic_id"]).drop_duplicates()


def served_flags(predictions: pd.DataFrame) -> pd.DataFrame:
    """The served focus areas as (user_id, topic_id, probability, is_weak) rows."""
    flags = [
        (user, int(a["topic_id"]), float(a["weak_probability"]), bool(a["is_weak"]))
        for user, _, response in served_rows(predictions)
        for a in response.get("focus_areas", [])
    ]
    return pd.DataFrame(flags, columns=["user_id", "topic_id", "probability", "is_weak"])


def focus_area_quality(
    frames: SourceFrames, predictions: pd.DataFrame, fp: FocusAreaParams, as_of: datetime
) -> dict[str, float] | None:
    """The served weak flags against the label training uses (`examples_at`: accuracy
    over the label window after the prediction, with enough answers), for the predictions
    whose label window has closed by `as_of`."""
    closed = predictions[
        predictions["created_at"] + pd.Timedelta(days=fp.label_window_days) <= pd.Timestamp(as_of)
    ]
    latest = latest_per_student(closed)
    labels = [  # one call per moment: predictions made together share their origin
        examples_at(
            frames.for_users(group["user_id"]), cast(pd.Timestamp, moment).to_pydatetime(), fp
        )
        for moment, group in latest.groupby("created_at")
    ]
    if not labels:
        return None
    scored = served_flags(latest).merge(
        pd.concat(labels)[["user_id", "topic_id", LABEL]], on=["user_id", "topic_id"]
    )
    if scored.empty:
        return None
    return binary_classification(
        scored[LABEL].to_numpy(),
        scored["probability"].to_numpy(),
        decisions=scored["is_weak"].to_numpy(),
    )


class FocusAreaMonitoring(LiveMonitoring):
    """The topic test statistics of the served (student, topic) pairs; live weak-topic F1
    against a floor."""

    @property
    def features(self) -> FeatureSet | None:
        return FeatureSet("topic_test_stats", focus.FEATURE_COLUMNS, focus.TABLES)

    @property
    def limit(self) -> QualityLimit | None:
        return QualityLimit("f1", "weak-topic F1", "focus_area_min_f1", floor=True, headline="F1")

    @property
    def outcome_tables(self) -> tuple[str, ...]:
        return focus.TABLES

    def served_features(self, table: pd.DataFrame, served: pd.DataFrame) -> pd.DataFrame:
        """Only the topics the model answered about, of the served students."""
        return table.merge(served_topics(served), on=["user_id", "topic_id"])

    def quality(
        self,
        frames: SourceFrames,
        predictions: pd.DataFrame,
        params: Mapping[str, Any],
        as_of: datetime,
    ) -> dict[str, float] | None:
        return focus_area_quality(frames, predictions, FocusAreaParams.from_params(params), as_of)


MONITORING = FocusAreaMonitoring()
