"""Focus-area identifier: is a topic weak for a student, from the student's test results?"""

# A model version registered before the split pickled its pyfunc by the flat module's path
# (`training.focus_area.FocusAreaPyfunc`); its state holds only sklearn estimators and
# numbers, so that is the one class such a pickle names here. Forwarded so it still loads.
_MOVED = {"FocusAreaPyfunc": "training.focus_area.inference"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import importlib  # lazy: the package imports nothing until an old name is asked for

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
