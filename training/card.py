"""What names a model everywhere: its CLI key, its registered name and the metric that
ranks its versions. Each model's `inference` module defines its card, so serving can name
and report a model without importing its training code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class ModelCard:
    key: str  # the CLI name and the store names' suffix, e.g. focus-area
    name: str  # the registered model name, e.g. prepiq-focus-area
    main_metric: str  # the key in report["model"] that ranks versions (and the gate uses)
    higher_is_better: bool  # of the main metric


def moved_classes(package: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """The PEP 562 `__getattr__` of a model package whose classes once lived in the flat
    module of the same name. Pickles made before the split name them `<package>.<Name>`:
    a registered version's pyfunc (and the classes its state holds), and a frozen
    hold-out's dataset. `moved` maps each such name to the package's module where it
    lives now (`inference`, `data`), so those still load. Only those names: nothing else
    of the old module is reachable this way."""

    def forward(name: str) -> object:
        if name not in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{moved[name]}"), name)

    return forward
