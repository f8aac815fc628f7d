"""The registry of models: the one place a model is added. Each entry is a package under
`training/` that holds, by module, what the rest of the platform asks of a model:

- `inference.CARD` (`training.card.ModelCard`) and the logged pyfunc: all serving imports;
- `params.PARAMS`: the typed model of its params.yaml section;
- `spec.SPEC` (`training.model_spec.ModelSpec`): training, the gate and monitoring.

The modules are imported by name, so serving loads only the `inference` modules and a
model's training code is loaded only by what trains or judges it. The lists are checked
when first built: a package without one of these names fails naming it.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import Any

from training.card import ModelCard

# In the order they train and are reported in.
PACKAGES: tuple[str, ...] = (
    "training.progress_forecaster",
    "training.topic_recommender",
    "training.focus_area",
    "training.question_ranker",
)


def members(module: str, name: str, kind: type) -> list[Any]:
    """`name` of every package's `module`, each checked to be a `kind` (or a subclass)."""
    found = []
    for package in PACKAGES:
        member = getattr(import_module(f"{package}.{module}"), name, None)
        if not isinstance(member, kind) and not (
            isinstance(member, type) and issubclass(member, kind)
        ):
            raise TypeError(f"{package}.{module} must define {name} (a {kind.__name__})")
        found.append(member)
    return found


@cache
def cards() -> dict[str, ModelCard]:
    """Every model's card by its key (imports only the `inference` modules)."""
    return {card.key: card for card in members("inference", "CARD", ModelCard)}
