"""The progress forecaster: a student's syllabus completion at +30, +60 and +90 days."""

from training.card import moved_classes

# Class -> the module it lives in now, for pickles made before the split: a registered
# version's pyfunc (`inference`) and a frozen hold-out's dataset (`data`).
MOVED: dict[str, str] = {
    "ProgressForecasterPyfunc": "inference",
    "Forecaster": "inference",
    "ForecastNet": "inference",
    "InputScaler": "inference",
    "ForecastData": "data",
    "Examples": "data",
}
__getattr__ = moved_classes(__name__, MOVED)
