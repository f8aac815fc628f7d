"""The topic recommender's drift and live-quality hooks for the monitoring flow
(`pipelines.monitoring`): its inputs are the candidate topics' student-dependent columns,
and no live outcome of its recommendations is scored yet."""

from __future__ import annotations

from features import recommend
from training.live import DriftOnly, FeatureSet


class TopicRecommenderMonitoring(DriftOnly):
    """Drift of the candidate topics' student-dependent columns; no live quality."""

    @property
    def features(self) -> FeatureSet:
        # Only the student-dependent columns: the topic content changes with the syllabus.
        return FeatureSet(
            "topic_candidates",
            tuple(c for c in recommend.CANDIDATE_COLUMNS if c not in recommend.CONTENT_COLUMNS),
            recommend.TABLES,
        )


MONITORING = TopicRecommenderMonitoring()
