"""The topic recommender's drift and live-quality hooks for the monitoring flow
(`pipelines.monitoring`): its inputs are the candidate topics' student-dependent columns,
and no live outcome of its recommendations is scored yet."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from features import recommend
from features.frames import SourceFrames
from training.live import FeatureSet, LiveMonitoring, QualityLimit


class TopicRecommenderMonitoring(LiveMonitoring):
    """Drift of the candidate topics' student-dependent columns; no live quality."""

    @property
    def features(self) -> FeatureSet:
        # Only the student-dependent columns: the topic content changes with the syllabus.
        return FeatureSet(
            "topic_candidates",
            tuple(c for c in recommend.CANDIDATE_COLUMNS if c not in recommend.CONTENT_COLUMNS),
            recommend.TABLES,
        )

    @property
    def limit(self) -> QualityLimit | None:
        return None  # no live outcome is scored yet

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
        """None: no live outcome of a recommendation is scored yet."""
        return None


MONITORING = TopicRecommenderMonitoring()
