"""The question ranker in the monitoring flow (`pipelines.monitoring`): nothing to watch.
Its inputs are the past-paper catalogue, the same for every caller (the data gate checks
it at every ingest), so there is no per-student feature drift, and no served ranking is
scored against an outcome."""

from __future__ import annotations

from training.live import DriftOnly, FeatureSet


class QuestionRankerMonitoring(DriftOnly):
    """No features: nothing per student to watch."""

    @property
    def features(self) -> FeatureSet | None:
        return None


MONITORING = QuestionRankerMonitoring()
