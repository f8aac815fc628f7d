"""The topic recommender: which of a student's enrolled topics to work on next, ranked."""

from training.card import moved_classes

# Class -> the module it lives in now, for pickles made before the split: a registered
# version's pyfunc (`inference`) and a frozen hold-out's dataset (`data`).
MOVED: dict[str, str] = {
    "TopicRecommenderPyfunc": "inference",
    "HybridRecommender": "inference",
    "CollaborativeFilter": "inference",
    "TwoStageScorer": "inference",
    "MasteryRule": "inference",
    "RecommenderData": "data",
}
__getattr__ = moved_classes(__name__, MOVED)
