"""Question-importance ranker: rank a subject's candidate questions for its next paper."""

from training.card import moved_classes

# Class -> the module it lives in now, for pickles made before the split: a registered
# version's pyfunc (`inference`) and a frozen hold-out's dataset (`data`).
MOVED: dict[str, str] = {
    "QuestionRankerPyfunc": "inference",
    "FittedRanker": "inference",
    "RankerData": "data",
    "CutOff": "data",
}
__getattr__ = moved_classes(__name__, MOVED)
