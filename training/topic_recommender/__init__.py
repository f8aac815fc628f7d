"""The topic recommender: which of a student's enrolled topics to work on next, ranked."""

from training.card import moved_classes

# The classes a pickle of a version registered before the split names by this path.
MOVED: tuple[str, ...] = (
    "TopicRecommenderPyfunc",
    "HybridRecommender",
    "CollaborativeFilter",
    "TwoStageScorer",
    "MasteryRule",
)
__getattr__ = moved_classes(__name__, MOVED)
