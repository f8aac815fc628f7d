"""The promotion gate: the current `champion` and the `challenger` of a model, loaded from
the registry and scored side by side on the model's frozen hold-out in the same run
(metrics logged at training time are never trusted), then judged check by check.

Comparative checks (against the champion): the main metric improves by at least
`promotion.min_uplift`; no slice regresses beyond `promotion.slice_tolerance`.
Absolute checks (the challenger alone): it beats every baseline of its report, passes the
model's behavioural checks, and predicts within `promotion.latency_budget_ms` (p95 of
single requests). With no champion yet, the absolute checks alone decide.

Slices, behavioural checks and request samples are required hooks of every `ModelSpec`
(`slice_reports`, `behaviour_checks`, `request_samples`): a model without one cannot be
registered at all, and a hook that runs no check fails its check rather than passing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from core.config import params_section
from core.exceptions import RegistryError
from registry.aliases import CHALLENGER, CHAMPION, alias_version
from training import reports
from training.model_spec import ModelSpec, TrainingContext
from training.runs import relative_gain

Predict = Callable[[pd.DataFrame], pd.DataFrame]
Decision = Literal["promote", "keep", "refuse"]

UPLIFT = "uplift over the champion"
SLICES = "no slice regression"
BASELINES = "beats every baseline"
BEHAVIOUR = "behavioural checks"
LATENCY = "latency"
LOADS = "challenger loads"
COMPARATIVE = (UPLIFT, SLICES)


@dataclass(frozen=True)
class PromotionParams:
    """The knobs of `params.yaml: promotion`."""

    min_uplift: float = 0.01
    slice_tolerance: float = 0.05
    min_slice_size: int = 30
    new_student_days: int = 60
    latency_budget_ms: float = 200.0
    latency_sample: int = 30
    lock_timeout_seconds: float = 300.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PromotionParams:
        return cls(**params_section(params, "promotion", cls.__dataclass_fields__))


@dataclass
class Check:
    """One named check of the gate: passed or not, and why (`judged` is False when it could
    not apply, e.g. no champion to compare with; such a check passes)."""

    name: str
    passed: bool
    reason: str
    judged: bool = True


@dataclass
class Scored:
    """One registered version scored on the hold-out in this run."""

    alias: str
    version: str
    run_id: str
    report: dict[str, Any]
    markdown: str
    value: float  # the main metric
    slices: dict[str, dict[str, float]]


@dataclass
class GateReport:
    """What the gate saw and decided, check by check."""

    model: str
    key: str
    main_metric: str
    higher_is_better: bool
    holdout_sha256: str
    champion: Scored | None
    challenger: Scored | None
    checks: list[Check] = field(default_factory=list)
    note: str = ""  # why nothing was judged (no challenger, already champion)

    @property
    def decision(self) -> Decision:
        """promote when every check passed; refuse when an absolute check failed (the
        challenger is not fit to serve); keep otherwise (normal: not better enough)."""
        if self.challenger is None or not self.checks:
            return "keep"
        failed = [c.name for c in self.checks if not c.passed]
        if not failed:
            return "promote"
        return "keep" if set(failed) <= set(COMPARATIVE) else "refuse"

    def reasons(self) -> list[str]:
        """One line per check (or the note when nothing was judged)."""
        if not self.checks:
            return [self.note]
        return [
            f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.reason}"
            + ("" if c.judged else " (n/a)")
            for c in self.checks
        ]

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self) | {"decision": self.decision})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def to_markdown(self) -> str:
        """The report for a person, a CI job summary or a pull-request comment."""
        champion = f"v{self.champion.version}" if self.champion else "none"
        challenger = f"v{self.challenger.version}" if self.challenger else "none"
        lines = [
            f"## {self.model}: {self.decision.upper()}",
            "",
            f"Champion {champion}, challenger {challenger}; main metric `{self.main_metric}` "
            f"({'higher' if self.higher_is_better else 'lower'} is better); hold-out sha256 "
            f"`{self.holdout_sha256[:12]}`.",
            "",
        ]
        if not self.checks:
            return "\n".join([*lines, self.note, ""])
        lines += ["| check | result | reason |", "|---|---|---|"]
        for c in self.checks:
            result = "pass" if c.passed else "**FAIL**"
            lines.append(f"| {c.name} | {result if c.judged else 'n/a'} | {c.reason} |")
        lines.append("")
        for scored in (self.champion, self.challenger):
            if scored is not None:
                lines += [f"#### {scored.alias} v{scored.version}", "", scored.markdown, ""]
        if self.champion and self.challenger:
            rows = {
                name: {
                    "champion": self.champion.slices[name].get(self.main_metric, math.nan),
                    "challenger": metrics.get(self.main_metric, math.nan),
                    "n": metrics.get("n", math.nan),
                }
                for name, metrics in self.challenger.slices.items()
                if name in self.champion.slices
            }
            lines.append(
                reports.markdown_table(
                    f"slices ({self.main_metric})", rows, ["champion", "challenger", "n"]
                )
            )
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so the JSON report is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def change(value: float, reference: float, higher_is_better: bool) -> float:
    """Relative improvement of `value` over `reference` (infinite when the reference is
    zero and they differ)."""
    if reference == 0:
        if value == reference:
            return 0.0
        return math.inf if (value > reference) == higher_is_better else -math.inf
    return relative_gain(value, reference, higher_is_better)


def _better(value: float, reference: float, higher_is_better: bool) -> bool:
    return value > reference if higher_is_better else value < reference


def load_version(name: str, alias: str, version: str) -> PyFuncModel:
    """A registered version loaded as serving would load it (by number, so an alias moved
    meanwhile does not change what is scored)."""
    try:
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except (MlflowException, OSError, ImportError, ValueError) as exc:
        raise RegistryError(
            f"{name}: version {version} ({alias}) does not load: {type(exc).__name__}: {exc}"
        ) from exc


def predictor(model: PyFuncModel) -> Predict:
    """A loaded model's `predict` as the specs call it (a DataFrame in, a DataFrame out)."""

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(model.predict(frame))

    return predict


def score(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    data: Any,
    client: MlflowClient,
    alias: str,
    version: str,
    model: PyFuncModel,
) -> Scored:
    """A loaded version's hold-out report and slices."""
    predict = predictor(model)
    report, markdown = spec.evaluate(ctx, data, predict)
    return Scored(
        alias=alias,
        version=version,
        run_id=str(client.get_model_version(spec.name, version).run_id),
        report=report,
        markdown=markdown,
        value=float(report["model"][spec.main_metric]),
        slices=spec.slice_reports(ctx, data, predict),
    )


def uplift_check(
    spec: ModelSpec[Any, Any], champion: Scored, challenger: Scored, need: float
) -> Check:
    gain = change(challenger.value, champion.value, spec.higher_is_better)
    return Check(
        UPLIFT,
        gain >= need,
        f"{spec.main_metric} {challenger.value:.4f} vs champion {champion.value:.4f} "
        f"({gain:+.1%}; needs at least {need:+.1%})",
    )


def slice_check(
    spec: ModelSpec[Any, Any], champion: Scored, challenger: Scored, params: PromotionParams
) -> Check:
    metric = spec.main_metric
    regressions, judged, skipped = [], 0, []
    for name, new in challenger.slices.items():
        old = champion.slices.get(name)
        if old is None:
            continue
        if new.get("n", 0) < params.min_slice_size or not (
            math.isfinite(new.get(metric, math.nan)) and math.isfinite(old.get(metric, math.nan))
        ):
            skipped.append(name)
            continue
        judged += 1
        gain = change(new[metric], old[metric], spec.higher_is_better)
        if gain < -params.slice_tolerance:
            regressions.append(f"{name} {old[metric]:.3f} -> {new[metric]:.3f} ({gain:+.1%})")
    note = f"; {len(skipped)} too small to judge" if skipped else ""
    if regressions:
        return Check(
            SLICES,
            False,
            f"{metric} regresses beyond {params.slice_tolerance:.0%} on "
            + ", ".join(regressions)
            + note,
        )
    return Check(
        SLICES, True, f"{judged} slices within {params.slice_tolerance:.0%} of the champion{note}"
    )


def baseline_check(spec: ModelSpec[Any, Any], challenger: Scored) -> Check:
    metric = spec.main_metric
    baselines = {
        name.removeprefix("baseline_"): float(metrics[metric])
        for name, metrics in challenger.report.items()
        if name.startswith("baseline_")
    }
    if not baselines:
        return Check(BASELINES, True, "the report has no baselines", judged=False)
    losing = [
        f"{name} {value:.4f}"
        for name, value in baselines.items()
        if not _better(challenger.value, value, spec.higher_is_better)
    ]
    if losing:
        return Check(
            BASELINES, False, f"{metric} {challenger.value:.4f} does not beat {', '.join(losing)}"
        )
    return Check(
        BASELINES, True, f"{metric} {challenger.value:.4f} beats {', '.join(sorted(baselines))}"
    )


def behaviour_check(
    spec: ModelSpec[Any, Any], ctx: TrainingContext, data: Any, predict: Predict
) -> Check:
    results = spec.behaviour_checks(ctx, data, predict)
    if not results:
        return Check(BEHAVIOUR, False, f"{spec.key}'s behavioural checks ran none")
    failed = [f"{name}: {why}" for name, (ok, why) in results.items() if not ok]
    if failed:
        return Check(BEHAVIOUR, False, "; ".join(failed))
    return Check(BEHAVIOUR, True, "; ".join(f"{n}: {why}" for n, (_, why) in results.items()))


def latency_check(
    spec: ModelSpec[Any, Any],
    data: Any,
    model: PyFuncModel,
    load_seconds: float,
    params: PromotionParams,
) -> Check:
    """p95 of single-request predict calls, after one warm-up call."""
    samples = spec.request_samples(data, params.latency_sample)
    if not samples:
        return Check(LATENCY, False, "the hold-out gave no request samples")
    model.predict(samples[0])
    timings = []
    for request in samples:
        started = time.perf_counter()
        model.predict(request)
        timings.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(timings, 95))
    return Check(
        LATENCY,
        p95 <= params.latency_budget_ms,
        f"p95 {p95:.1f} ms over {len(timings)} single requests (budget "
        f"{params.latency_budget_ms:.0f} ms); loaded in {load_seconds:.1f} s",
    )


def decide(
    spec: ModelSpec[Any, Any],
    client: MlflowClient,
    data: Any,
    holdout_sha256: str,
    ctx: TrainingContext,
    params: PromotionParams,
) -> GateReport:
    """Score the champion and the challenger of `spec` on the frozen hold-out `data` and
    judge the challenger. Raises `RegistryError` when the champion does not load."""
    champion_version = alias_version(client, spec.name, CHAMPION)
    challenger_version = alias_version(client, spec.name, CHALLENGER)
    report = GateReport(
        model=spec.name,
        key=spec.key,
        main_metric=spec.main_metric,
        higher_is_better=spec.higher_is_better,
        holdout_sha256=holdout_sha256,
        champion=None,
        challenger=None,
    )
    champion = None
    if champion_version is not None:
        model = load_version(spec.name, CHAMPION, champion_version)
        champion = score(spec, ctx, data, client, CHAMPION, champion_version, model)
        report.champion = champion
    if challenger_version is None:
        report.note = f"{spec.name} has no {CHALLENGER}: nothing to judge (train one first)"
        return report
    if challenger_version == champion_version:
        report.note = f"{CHALLENGER} v{challenger_version} is the {CHAMPION} already"
        return report
    started = time.perf_counter()
    try:
        model = load_version(spec.name, CHALLENGER, challenger_version)
    except RegistryError as exc:
        report.checks = [Check(LOADS, False, str(exc))]
        return report
    load_seconds = time.perf_counter() - started
    challenger = score(spec, ctx, data, client, CHALLENGER, challenger_version, model)
    report.challenger = challenger
    if champion is None:
        report.checks = [
            Check(UPLIFT, True, f"no {CHAMPION} yet: the absolute checks decide", judged=False),
            Check(SLICES, True, f"no {CHAMPION} yet", judged=False),
        ]
    else:
        report.checks = [
            uplift_check(spec, champion, challenger, params.min_uplift),
            slice_check(spec, champion, challenger, params),
        ]
    report.checks += [
        baseline_check(spec, challenger),
        behaviour_check(spec, ctx, data, predictor(model)),
        latency_check(spec, data, model, load_seconds, params),
    ]
    return report
