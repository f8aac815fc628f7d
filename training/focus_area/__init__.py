"""Focus-area identifier: is a topic weak for a student, from the student's test results?"""

from training.card import moved_classes

# Class -> the module it lives in now, for pickles made before the split: a registered
# version's pyfunc (`inference`) and a frozen hold-out's dataset (`data`).
MOVED: dict[str, str] = {"FocusAreaPyfunc": "inference", "FocusAreaData": "data"}
__getattr__ = moved_classes(__name__, MOVED)
