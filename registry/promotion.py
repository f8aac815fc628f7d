"""Promotion and rollback: the only ways a version becomes `champion`.

`promote` runs the gate (`registry.gate`) on the model's frozen hold-out and, when the
challenger passes, makes it champion; `rollback` makes `previous` champion again. Both hold
the model's lock (`registry.lock`) and write an audit run (`registry.audit`) whatever
happens.

Order of a promotion, so that a crash at any point leaves a champion that loads:
1. the challenger was loaded from the registry and scored by the gate (by version
   number), so its artifacts download and load;
2. `previous` := the old champion, then `champion` := the challenger (each one atomic
   registry write; a failure between them leaves the old champion in place and the old
   `previous` restored);
3. the `challenger` alias is removed (consumed; a crash before it leaves challenger ==
   champion, which the next run reports as "nothing to judge").
Serving follows the `champion` alias itself (`serving.models`): every worker of every
replica fetches the new champion from the registry within its poll interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mlflow import MlflowClient

from core.config import get_settings
from core.exceptions import RegistryError
from core.logging import get_logger
from registry import audit, holdout
from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version
from registry.gate import GateReport, PromotionParams, decide, load_version
from registry.lock import promotion_lock
from training import tracking
from training.model_spec import ModelSpec, TrainingContext

Outcome = Literal["promoted", "kept", "refused", "dry_run", "rolled_back"]
# Exit codes of `prepiq promote`: a champion changed, every champion kept, a model could
# not be judged (a PrepIQError's code), an internal error.
PROMOTED, KEPT, ERROR, INTERNAL = 0, 3, 2, 1
VERDICTS: dict[str, Outcome] = {"promote": "promoted", "keep": "kept", "refuse": "refused"}


@dataclass
class PromotionResult:
    """What a promotion or rollback decided and where the registry stands after it."""

    model: str
    key: str
    decision: Outcome
    champion: str | None  # after the decision
    previous: str | None
    audit_run_id: str
    report: GateReport | None = None
    would: str | None = None  # a dry run: what the gate would have done

    @property
    def exit_code(self) -> int:
        """0 when a version became champion (or would, in a dry run), else 3."""
        promoted = self.decision in ("promoted", "rolled_back") or self.would == "promote"
        return PROMOTED if promoted else KEPT

    def markdown(self) -> str:
        head = (
            f"**{self.decision}**"
            + (f" (the gate would {self.would})" if self.would else "")
            + f": champion {_v(self.champion)}, previous {_v(self.previous)}; "
            f"audit run `{self.audit_run_id}`"
        )
        body = self.report.to_markdown() if self.report else ""
        return f"{body}\n{head}\n"


def combined_exit_code(codes: list[int]) -> int:
    """One exit code for several models: an internal error over an error over a changed
    champion over every champion kept."""
    for worst in (INTERNAL, ERROR, PROMOTED):
        if worst in codes:
            return worst
    return KEPT if codes else PROMOTED


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _client() -> tuple[MlflowClient, str]:
    uri = tracking.configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _lock(spec: ModelSpec[Any, Any], uri: str, params: PromotionParams) -> Any:
    return promotion_lock(
        spec.name, uri, get_settings().home / "locks", params.lock_timeout_seconds
    )


def move_champion(spec: ModelSpec[Any, Any], client: MlflowClient, version: str) -> str | None:
    """Make `version` champion, keeping the old one as `previous` (step 2 of the module
    docstring); returns the old champion."""
    old_champion = alias_version(client, spec.name, CHAMPION)
    old_previous = alias_version(client, spec.name, PREVIOUS)
    try:
        if old_champion is not None:
            client.set_registered_model_alias(spec.name, PREVIOUS, old_champion)
        client.set_registered_model_alias(spec.name, CHAMPION, version)
    except BaseException:
        # The champion alias never moved: undo what did, so serving and rollback still
        # see the old state.
        if old_previous is not None:
            client.set_registered_model_alias(spec.name, PREVIOUS, old_previous)
        elif old_champion is not None:
            client.delete_registered_model_alias(spec.name, PREVIOUS)
        raise
    return old_champion


def promote(
    spec: ModelSpec[Any, Any],
    ctx: TrainingContext,
    *,
    dry_run: bool = False,
    actor: str | None = None,
    refresh_holdout: bool = False,
) -> PromotionResult:
    """Judge the challenger of `spec` against its champion on the frozen hold-out and
    promote it when it passes (unless `dry_run`). Every call leaves an audit run."""
    params = PromotionParams.from_params(ctx.params)
    client, uri = _client()
    who = actor or audit.actor()
    log = get_logger("prepiq.promotion")
    with _lock(spec, uri, params):
        run_id = audit.open_record(client, spec, "promote", who)
        report: GateReport | None = None
        try:
            frozen = holdout.ensure(spec, ctx, refresh=refresh_holdout, client=client)
            report = decide(spec, client, frozen.data, frozen.sha256, ctx, params)
            result = PromotionResult(
                model=spec.name,
                key=spec.key,
                decision=VERDICTS[report.decision],
                champion=report.champion.version if report.champion else None,
                previous=alias_version(client, spec.name, PREVIOUS),
                audit_run_id=run_id,
                report=report,
            )
            if dry_run:
                result.decision, result.would = "dry_run", report.decision
            elif report.decision == "promote" and report.challenger is not None:
                version = report.challenger.version
                old_champion = move_champion(spec, client, version)
                result.champion, result.previous = version, old_champion or result.previous
                client.delete_registered_model_alias(spec.name, CHALLENGER)
            audit.close_record(
                client,
                run_id,
                decision=result.decision,
                from_version=report.champion.version if report.champion else None,
                to_version=report.challenger.version if report.challenger else None,
                reasons=report.reasons(),
                params=params,
                report=report,
                markdown=result.markdown(),
            )
        except BaseException as exc:
            audit.close_record(
                client,
                run_id,
                decision="failed",
                from_version=report.champion.version if report and report.champion else None,
                to_version=report.challenger.version if report and report.challenger else None,
                reasons=[f"{type(exc).__name__}: {exc}"],
                params=params,
                report=report,
                failed=True,
            )
            raise
    log.info("promotion", model=spec.name, decision=result.decision, champion=result.champion)
    return result


def rollback(
    spec: ModelSpec[Any, Any], ctx: TrainingContext, *, actor: str | None = None
) -> PromotionResult:
    """Make the `previous` version champion again (after checking it loads), audited; the
    `previous` alias is consumed (one step back, not a toggle)."""
    params = PromotionParams.from_params(ctx.params)
    client, uri = _client()
    with _lock(spec, uri, params):
        previous = alias_version(client, spec.name, PREVIOUS)
        champion = alias_version(client, spec.name, CHAMPION)
        if previous is None:
            raise RegistryError(f"{spec.name}: no '{PREVIOUS}' version to roll back to")
        if previous == champion:
            raise RegistryError(f"{spec.name}: '{PREVIOUS}' v{previous} is the champion already")
        run_id = audit.open_record(client, spec, "rollback", actor or audit.actor())
        reasons = [f"rollback: {CHAMPION} v{champion} -> v{previous} ({PREVIOUS})"]
        try:
            load_version(spec.name, PREVIOUS, previous)
            client.set_registered_model_alias(spec.name, CHAMPION, previous)
            client.delete_registered_model_alias(spec.name, PREVIOUS)
        except BaseException as exc:
            audit.close_record(
                client,
                run_id,
                decision="failed",
                from_version=champion,
                to_version=previous,
                reasons=[*reasons, f"{type(exc).__name__}: {exc}"],
                params=params,
                failed=True,
            )
            raise
        audit.close_record(
            client,
            run_id,
            decision="rolled_back",
            from_version=champion,
            to_version=previous,
            reasons=reasons,
            params=params,
            markdown=f"## {spec.name}: ROLLED BACK\n\n{reasons[0]}\n",
        )
    return PromotionResult(
        model=spec.name,
        key=spec.key,
        decision="rolled_back",
        champion=previous,
        previous=None,
        audit_run_id=run_id,
    )
