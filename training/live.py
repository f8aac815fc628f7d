"""What a model gives the monitoring flow (`pipelines.monitoring`): the features whose
drift is watched and how its served predictions are scored once their outcome arrives.
Each model's `monitoring` module implements `LiveMonitoring`; the flow only loops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from features.frames import SourceFrames


@dataclass(frozen=True)
class FeatureSet:
    """A model's inputs as one feature table of `features.store.BUILDERS`."""

    table: str
    columns: tuple[str, ...]
    source_tables: tuple[str, ...]


@dataclass(frozen=True)
class QualityLimit:
    """A live-quality threshold: `metric` of the live report against the monitoring
    params' field `params_field`, crossed when below it (`floor`) or above it."""

    metric: str
    label: str  # in words, for the retraining reason
    params_field: str  # of `params.yaml: monitoring`
    floor: bool
    headline: str  # the metric's short name in the summary table, e.g. F1


class LiveMonitoring(ABC):
    """Drift and live quality of one model. A model with nothing per student to watch
    (the question ranker's inputs are the past-paper catalogue) returns None from
    `features`; one whose outcomes never arrive returns None from `limit`."""

    @property
    @abstractmethod
    def features(self) -> FeatureSet | None:
        """The feature table (and its columns) whose drift is watched."""

    @property
    @abstractmethod
    def limit(self) -> QualityLimit | None:
        """The live-quality threshold that triggers retraining."""

    @property
    @abstractmethod
    def outcome_tables(self) -> tuple[str, ...]:
        """The source tables `quality` reads the outcomes from."""

    def served_features(self, table: pd.DataFrame, served: pd.DataFrame) -> pd.DataFrame:
        """The rows of the rebuilt feature table the served predictions were about (by
        default all of the served students' rows)."""
        return table

    @abstractmethod
    def quality(
        self,
        frames: SourceFrames,
        predictions: pd.DataFrame,
        params: Mapping[str, Any],
        as_of: datetime,
    ) -> dict[str, float] | None:
        """The served predictions whose outcome has arrived by `as_of` against it (None
        when none has)."""


def served_rows(predictions: pd.DataFrame) -> list[tuple[str, pd.Timestamp, dict[str, Any]]]:
    """(user_id, created_at, response) of each logged prediction."""
    columns = ("user_id", "created_at", "response")
    return list(zip(*(predictions[c].tolist() for c in columns), strict=True))


def latest_per_student(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each student's latest prediction (so a frequent caller does not outweigh others)."""
    return predictions.sort_values("created_at").groupby("user_id").tail(1)


class DriftOnly(LiveMonitoring):
    """A model whose served predictions are not scored against an outcome (yet): at most
    its features' drift is watched (`features`, None for nothing per student)."""

    @property
    def limit(self) -> QualityLimit | None:
        return None

    @property
    def outcome_tables(self) -> tuple[str, ...]:
        return ()

    def quality(
        self,
        frames: SourceFrames,
        predictions: pd.DataFrame,
        params: Mapping[str, Any],
        as_of: datetime,
    ) -> dict[str, float] | None:
        return None
