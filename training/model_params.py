"""The typed model of a model's `params.yaml` section, validated once when it is read.

Every key is required and none has a default in code: `params.yaml` is the one place the
defaults live (a test source overlays its changes on it). A key the model does not know, a
missing key or a value of the wrong type is a `ConfigError` naming `section.key`. Values
are checked strictly, as JSON: "12" is not an integer and 1 is not a boolean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from core.exceptions import ConfigError


class StrictSection(BaseModel):
    """A frozen mapping of known keys: unknown keys are errors, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SearchSpace(StrictSection):
    """`search_space`: the [low, high] range of each hyperparameter Optuna searches."""

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: tuple(bounds) for name, bounds in self.model_dump().items()}

    def draws(self, trial: Any, log_scale: Set[str]) -> Draws:
        """An Optuna trial's draws from these ranges (a log scale for `log_scale`)."""
        return Draws(trial, self.ranges(), log_scale)


@dataclass(frozen=True)
class Draws:
    """One trial's values of the hyperparameters, each in its `search_space` range."""

    trial: Any  # an optuna.Trial (or FixedTrial): this module imports no Optuna
    ranges: Mapping[str, tuple[float, float]]
    log_scale: Set[str]

    def integer(self, name: str, step: int = 1) -> int:
        low, high = self.ranges[name]
        log = name in self.log_scale and step == 1  # Optuna takes no step on a log scale
        return int(self.trial.suggest_int(name, int(low), int(high), step=step, log=log))

    def real(self, name: str) -> float:
        low, high = self.ranges[name]
        return float(
            self.trial.suggest_float(name, float(low), float(high), log=name in self.log_scale)
        )


class ModelParams(StrictSection):
    """A model's section of params.yaml."""

    SECTION: ClassVar[str]  # the section's name in params.yaml, e.g. focus_area

    trials: int  # Optuna trials per training run
    # The smallest hold-out the evaluation accepts, in the model's own unit
    # (`ModelSpec.holdout_size`): below it the run stops rather than report noise.
    min_holdout: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """The section of a whole params.yaml mapping, validated."""
        return cls.from_section(params.get(cls.SECTION))

    @classmethod
    def from_section(cls, section: object) -> Self:
        if not isinstance(section, Mapping):
            raise ConfigError(f"params.yaml {cls.SECTION}: missing, or not a mapping of keys")
        try:
            return cls.model_validate_json(json.dumps(dict(section), default=str))
        except ValidationError as exc:
            raise ConfigError(describe(cls.SECTION, exc)) from None

    def replaced(self, **changes: Any) -> Self:
        """These params with some keys changed, validated again."""
        return self.from_section(self.model_dump(mode="json") | changes)


def describe(section: str, error: ValidationError) -> str:
    """Each problem of a section on one line, as `section.key: what is wrong (given)`."""
    lines = []
    for problem in error.errors():
        where = ".".join([section, *(str(part) for part in problem["loc"])])
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif problem["type"] == "missing":
            lines.append(f"{where}: missing (every key is required; see params.yaml)")
        else:
            lines.append(f"{where}: {problem['msg']} (got {problem['input']!r})")
    return "params.yaml " + "; ".join(lines)
