"""The four models of the platform, by their CLI name, in the order they train and are
reported in (training, the promotion gate, serving and the CLI all read this one list)."""

from __future__ import annotations

from training import focus_area, progress_forecaster, question_ranker, topic_recommender
from training.model_spec import ModelSpec

MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        progress_forecaster.SPEC,
        topic_recommender.SPEC,
        focus_area.SPEC,
        question_ranker.SPEC,
    )
}
