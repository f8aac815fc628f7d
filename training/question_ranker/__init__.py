"""Question-importance ranker: rank a subject's candidate questions for its next paper."""

from training.card import moved_classes

# The classes a pickle of a version registered before the split names by this path.
MOVED: tuple[str, ...] = (
    "QuestionRankerPyfunc",
    "FittedRanker",
)
__getattr__ = moved_classes(__name__, MOVED)
