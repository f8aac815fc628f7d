"""The progress forecaster: a student's syllabus completion at +30, +60 and +90 days."""

from training.card import moved_classes

# The classes a pickle of a version registered before the split names by this path.
MOVED: tuple[str, ...] = (
    "ProgressForecasterPyfunc",
    "Forecaster",
    "ForecastNet",
    "InputScaler",
)
__getattr__ = moved_classes(__name__, MOVED)
