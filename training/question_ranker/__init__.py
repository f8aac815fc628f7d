"""Question-importance ranker: rank a subject's candidate questions for its next paper."""

from __future__ import annotations

from importlib import import_module
from typing import Any

# A model version logged before the split pickled its pyfunc, and the fitted ranker it
# holds, as `training.question_ranker.<Name>`: these names resolve to where the classes
# live now, so such a version still loads. Only the classes a pickle names belong here.
_MOVED = {
    "QuestionRankerPyfunc": "training.question_ranker.inference",
    "FittedRanker": "training.question_ranker.inference",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
