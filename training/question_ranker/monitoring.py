"""The question ranker in the monitoring flow (`pipelines.monitoring`): nothing to watch.
Its inputs are the past-paper catalogue, the same for every caller (the data gate checks
it at every ingest), so there is no per-student feature drift, and no served ranking is
scored against an outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from features.frames import SourceFrames
from training.live import FeatureSet, LiveMonitoring, QualityLimit


class QuestionRankerMonitoring(LiveMonitoring):
    """No features, no live-quality limit, no outcome tables."""

    @property
    def features(self) -> FeatureSet | None:
        return None

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


MONITORING = QuestionRankerMonitoring()
