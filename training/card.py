"""What names a model everywhere: its CLI key, its registered name and the metric that
ranks its versions. Each model's `inference` module defines its card, so serving can name
and report a model without importing its training code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCard:
    key: str  # the CLI name and the store names' suffix, e.g. focus-area
    name: str  # the registered model name, e.g. prepiq-focus-area
    main_metric: str  # the key in report["model"] that ranks versions (and the gate uses)
    higher_is_better: bool  # of the main metric
