"""The topic recommender: which of a student's enrolled topics to work on next, ranked."""

# A model version registered before the split pickled its pyfunc by the flat module's
# path (`training.topic_recommender.<Name>`): the pyfunc class and every class its
# pickled state holds are forwarded to where they live now, so such a version still loads.
# Exactly those names: nothing else of the old module is reachable from here.
_MOVED = {
    "TopicRecommenderPyfunc": "inference",
    "HybridRecommender": "inference",
    "CollaborativeFilter": "inference",
    "TwoStageScorer": "inference",
    "MasteryRule": "inference",
}


def __getattr__(name: str) -> object:
    """PEP 562: an old pickle's class, from its new module."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module  # lazy: importing the package itself loads nothing

    return getattr(import_module(f"{__name__}.{_MOVED[name]}"), name)
