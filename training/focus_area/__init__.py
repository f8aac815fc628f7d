"""Focus-area identifier: is a topic weak for a student, from the student's test results?"""

from training.card import moved_classes

# The classes a pickle of a version registered before the split names by this path.
MOVED: tuple[str, ...] = ("FocusAreaPyfunc",)
__getattr__ = moved_classes(__name__, MOVED)
