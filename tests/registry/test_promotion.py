"""The promotion gate on real MLflow stores (SQLite and PostgreSQL), a real registry, real
model loading and the real BentoML store: small focus-area versions (one trained model
and deliberate variants of it) are registered, then judged on the frozen hold-out.

Mocks, where used, are named in the test: only the failure injected mid-promotion.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc.model import PythonModel
from sklearn.dummy import DummyClassifier

from core.config import get_settings
from core.exceptions import HoldoutError, PromotionLockedError, RegistryError
from features.focus import feature_matrix
from features.snapshot import RAW_DIR, read_manifest
from prepiq.cli import main
from registry import audit, holdout
from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version, mark_challenger
from registry.gate import BASELINES, SLICES, UPLIFT, PromotionParams
from registry.lock import promotion_lock
from registry.promotion import PromotionResult, combined_exit_code, promote
from tests.training.focus_area.conftest import small_params
from training import tracking
from training.focus_area.data import LABEL
from training.focus_area.inference import CARD, INPUT_COLUMNS, FocusAreaPyfunc
from training.focus_area.spec import SPEC
from training.model_spec import Outcome, TrainingContext, load_frames
from training.models import MODELS
from training.runs import register_model
from training.slices import SLICE_COLUMNS

pytestmark = pytest.mark.usefixtures("small_data_params")
NAME = CARD.name


def row_keys(frame: pd.DataFrame) -> np.ndarray:
    """A hash of each row's model inputs."""
    return pd.util.hash_pandas_object(frame[INPUT_COLUMNS].round(6), index=False).to_numpy()


class PeekingButBlindOnOneSubject(PythonModel):
    """Better than any real model overall, much worse on one subject: on the hold-out's
    own rows it answers with the true label, except that it never flags the topics of
    one subject weak; on any other input (behavioural probes) it is the trained model."""

    def __init__(
        self, base: FocusAreaPyfunc, holdout: pd.DataFrame, hidden_topics: list[int]
    ) -> None:
        self.base = base
        self.truth = dict(zip(row_keys(holdout), holdout[LABEL].astype(bool), strict=True))
        self.hidden_topics = hidden_topics

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        out = self.base.predict(context, model_input)
        keys = row_keys(model_input)
        known = np.array([k in self.truth for k in keys])
        label = np.array([self.truth.get(k, False) for k in keys])
        label &= ~model_input["topic_id"].isin(self.hidden_topics).to_numpy()
        out.loc[known, "is_weak"] = label[known]
        out.loc[known, "weak_probability"] = label[known].astype(float)
        return out


@pytest.fixture(scope="module")
def context(clean_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingContext:
    """The small snapshot copied into a data folder of this module's own (the hold-out
    is frozen there), with the small params the training tests use."""
    data = tmp_path_factory.mktemp("promotion_data")
    shutil.copytree(clean_snapshot, data / RAW_DIR)
    manifest = read_manifest(data / RAW_DIR)
    assert manifest is not None
    params = small_params()
    return TrainingContext(
        snapshot_dir=data / RAW_DIR,
        data_dir=data,
        as_of=datetime.fromisoformat(manifest.as_of),
        params=params,
        seed=int(params["seed"]),
        trials=1,
    )


@pytest.fixture(scope="module")
def outcome(context: TrainingContext) -> Outcome:
    """One small trained focus-area model (one Optuna trial), and its frozen hold-out."""
    import optuna

    data = SPEC.prepare(context, load_frames(context))
    study = optuna.create_study(
        direction=SPEC.direction, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(SPEC.objective(context, data), n_trials=1)
    holdout.freeze(SPEC, context)
    return SPEC.finish(context, data, study.best_params, study.best_value)


@pytest.fixture(scope="module")
def variants(outcome: Outcome, context: TrainingContext) -> dict[str, PythonModel]:
    """The trained model and deliberately different versions of it."""
    model = outcome.python_model
    assert isinstance(model, FocusAreaPyfunc)
    data = holdout.load(SPEC.key, context.data_dir).data
    never_weak = DummyClassifier(strategy="constant", constant=0).fit(
        feature_matrix(data.train), data.train[LABEL]
    )
    topics = pd.read_parquet(context.snapshot_dir / "topics.parquet")
    # The smallest subject the gate still judges: blind there, the model stays far above
    # the baselines overall.
    sizes = data.holdout["subject"].value_counts()
    judged = PromotionParams.from_params(context.params).min_slice_size
    blind_subject = sizes[sizes >= judged].idxmin()
    return {
        "trained": model,
        # Flags only the most certain topics: far fewer weak topics found (lower F1).
        "timid": FocusAreaPyfunc(model.estimator, 0.7, model.target_accuracy),
        "never_weak": FocusAreaPyfunc(never_weak, 0.5, model.target_accuracy),
        "blind_on_one_subject": PeekingButBlindOnOneSubject(
            model,
            data.holdout,
            topics.loc[topics["subject_id"] == blind_subject, "id"].tolist(),
        ),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    context: TrainingContext,
) -> Iterator[MlflowClient]:
    """A fresh MLflow tracking store and registry, and the CLI pointed at the module's data."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if request.param == "sqlite" else make_pg_database()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(context.data_dir))
    get_settings.cache_clear()
    tracking.configure()
    yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    get_settings.cache_clear()


def register(outcome: Outcome, model: PythonModel, alias: str = CHALLENGER) -> str:
    """Log and register a version as training does; alias it (`challenger` through the
    training flow's own function; `champion` directly, to set up an existing champion)."""
    mlflow.set_experiment(experiment_id=tracking.experiment(NAME))
    with mlflow.start_run():
        mlflow.set_tag("data_version", "test-data")
        version = register_model(SPEC, replace(outcome, python_model=model))
    client = MlflowClient()
    if alias == CHALLENGER:
        mark_challenger(client, NAME, version)
    else:
        client.set_registered_model_alias(NAME, alias, version)
    return version


def audit_runs(client: MlflowClient) -> list[Any]:
    experiment = client.get_experiment_by_name(audit.EXPERIMENT)
    assert experiment is not None
    return list(
        client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=50
        )
    )


def test_the_first_passing_challenger_becomes_champion_and_a_worse_one_is_kept(
    store: MlflowClient,
    outcome: Outcome,
    variants: dict[str, PythonModel],
    context: TrainingContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = register(outcome, variants["trained"])
    assert main(["promote", "--model", "focus-area"]) == 0
    assert alias_version(store, NAME, CHAMPION) == first
    assert alias_version(store, NAME, CHALLENGER) is None  # consumed

    worse = register(outcome, variants["never_weak"])
    capsys.readouterr()
    assert main(["promote", "--model", "focus-area"]) == 3
    assert "REFUSE" in capsys.readouterr().out
    assert alias_version(store, NAME, CHAMPION) == first
    assert alias_version(store, NAME, CHALLENGER) == worse  # kept for inspection
    saved = json.loads((context.data_dir / "promotion" / "focus-area.json").read_text())
    assert saved["decision"] == "refused"
    checks = {c["name"]: c for c in saved["report"]["checks"]}
    assert not checks[UPLIFT]["passed"]
    assert not checks[BASELINES]["passed"]
    assert "does not beat" in checks[BASELINES]["reason"]
    assert "REFUSE" in (context.data_dir / "promotion" / "focus-area.md").read_text()

    assert main(["promote", "--model", "focus-area", "--dry-run"]) == 3
    assert alias_version(store, NAME, CHAMPION) == first

    decisions = [r.data.tags["decision"] for r in audit_runs(store)]
    assert decisions == ["promoted", "refused", "dry_run"]
    refused = audit_runs(store)[1]
    assert refused.data.tags["from_version"] == first
    assert refused.data.tags["to_version"] == worse
    assert refused.data.tags["holdout_sha256"] == holdout.load(SPEC.key, context.data_dir).sha256
    assert refused.data.metrics["challenger.model.f1"] == 0.0
    assert refused.data.metrics["champion.model.f1"] > 0.3
    assert "FAIL beats every baseline" in refused.data.tags["reasons"]

    capsys.readouterr()
    assert main(["status", "--history", "focus-area"]) == 0
    trail = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in trail[1:]] == ["dry_run", "refused", "promoted"]
    assert main(["status"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if NAME in line]
    assert f"v{first} (" in row and f"v{worse} (0.000)" in row and "test-data" in row


def test_a_better_challenger_is_promoted_and_rollback_restores_the_champion(
    store: MlflowClient,
    outcome: Outcome,
    variants: dict[str, PythonModel],
    context: TrainingContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = register(outcome, variants["timid"], alias=CHAMPION)
    new = register(outcome, variants["trained"])
    result = promote(SPEC, context, actor="tester")
    assert result.decision == "promoted", result.markdown()
    assert (alias_version(store, NAME, CHAMPION), alias_version(store, NAME, PREVIOUS)) == (
        new,
        old,
    )
    assert result.report is not None and result.report.champion is not None
    assert result.report.challenger is not None
    assert result.report.challenger.value > result.report.champion.value
    (record,) = audit_runs(store)
    assert record.data.tags["decision"] == "promoted"
    assert record.data.tags["actor"] == "tester"
    assert (record.data.tags["from_version"], record.data.tags["to_version"]) == (old, new)
    assert {"champion.model.f1", "challenger.model.f1"} <= set(record.data.metrics)
    artifacts = {a.path for a in store.list_artifacts(record.info.run_id, "promotion")}
    assert artifacts == {"promotion/report.json", "promotion/report.md"}

    assert main(["rollback", "--model", "focus-area"]) == 0
    assert alias_version(store, NAME, CHAMPION) == old
    assert alias_version(store, NAME, PREVIOUS) is None
    mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    last = audit_runs(store)[-1]
    assert (last.data.tags["decision"], last.data.tags["to_version"]) == ("rolled_back", old)
    capsys.readouterr()
    assert main(["rollback", "--model", "focus-area"]) == 2
    assert f"{NAME}: no 'previous' version" in capsys.readouterr().err


def test_a_slice_regression_blocks_a_challenger_better_overall(
    store: MlflowClient,
    outcome: Outcome,
    variants: dict[str, PythonModel],
    context: TrainingContext,
) -> None:
    register(outcome, variants["timid"], alias=CHAMPION)
    blind = register(outcome, variants["blind_on_one_subject"])
    result = promote(SPEC, context)
    assert result.report is not None
    checks = {c.name: c for c in result.report.checks}
    assert checks[UPLIFT].passed, checks[UPLIFT].reason  # better overall ...
    assert not checks[SLICES].passed  # ... but one subject collapses
    assert "subject" in checks[SLICES].reason
    assert result.decision == "kept" and result.exit_code == 3, result.report.reasons()
    assert alias_version(store, NAME, CHALLENGER) == blind
    assert alias_version(store, NAME, CHAMPION) != blind


def test_a_failure_mid_promotion_leaves_the_old_champion_in_place(
    store: MlflowClient,
    outcome: Outcome,
    variants: dict[str, PythonModel],
    context: TrainingContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = register(outcome, variants["timid"], alias=CHAMPION)
    new = register(outcome, variants["trained"])
    real = MlflowClient.set_registered_model_alias

    def crash_on_champion(self: MlflowClient, name: str, alias: str, version: str) -> None:
        if alias == CHAMPION:  # MOCK: the registry write of step 3 fails
            raise ConnectionError("registry went away")
        real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash_on_champion)
    with pytest.raises(ConnectionError):
        promote(SPEC, context)
    monkeypatch.undo()
    assert alias_version(store, NAME, CHAMPION) == old
    assert alias_version(store, NAME, PREVIOUS) is None  # restored
    assert alias_version(store, NAME, CHALLENGER) == new
    mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}").predict(
        outcome.input_example
    )  # still serves
    (record,) = audit_runs(store)
    assert record.data.tags["decision"] == "failed"
    assert record.info.status == "FAILED"
    assert "registry went away" in record.data.tags["reasons"]


def test_two_concurrent_promotions_do_not_interleave(
    store: MlflowClient,
    outcome: Outcome,
    variants: dict[str, PythonModel],
    context: TrainingContext,
) -> None:
    old = register(outcome, variants["timid"], alias=CHAMPION)
    new = register(outcome, variants["trained"])
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(promote(SPEC, context).decision)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # One promoted; the other waited, then found the challenger consumed.
    assert sorted(results) == ["kept", "promoted"]
    assert (alias_version(store, NAME, CHAMPION), alias_version(store, NAME, PREVIOUS)) == (
        new,
        old,
    )
    mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    first, second = audit_runs(store)
    assert first.info.end_time <= second.info.start_time  # the lock serialised them
    assert [first.data.tags["decision"], second.data.tags["decision"]] == ["promoted", "kept"]


def test_a_held_lock_makes_a_second_promotion_wait_then_fail_clearly(
    store: MlflowClient, context: TrainingContext
) -> None:
    uri = tracking.configure()
    quick = replace(context, params=context.params | {"promotion": {"lock_timeout_seconds": 0.5}})
    lock_dir = get_settings().home / "locks"
    with (
        promotion_lock(NAME, uri, lock_dir, timeout=5),
        pytest.raises(PromotionLockedError, match=f"{NAME}: another promotion"),
    ):
        promote(SPEC, quick)


def test_the_frozen_holdout_refuses_a_changed_file(
    outcome: Outcome, context: TrainingContext, tmp_path: Path
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(context.data_dir / holdout.HOLDOUT_DIR, copy / holdout.HOLDOUT_DIR)
    frozen = holdout.load(SPEC.key, copy)
    assert frozen.meta["model"] == NAME and frozen.meta["snapshot_content_hash"]
    assert set(SLICE_COLUMNS) <= set(frozen.data.holdout.columns)
    path = holdout.holdout_path(copy, SPEC.key)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(HoldoutError, match=f"{path}.*changed since it was frozen"):
        holdout.load(SPEC.key, copy)
    path.unlink()
    with pytest.raises(HoldoutError, match="no frozen hold-out"):
        holdout.load(SPEC.key, copy)


def test_every_host_judges_on_the_hold_out_stored_in_mlflow(
    store: MlflowClient, outcome: Outcome, context: TrainingContext, tmp_path: Path
) -> None:
    """The first host to judge stores its hold-out in MLflow; a host with none (a fresh CI
    runner) or with another downloads that one instead of freezing its own, until a
    refresh is asked for."""
    first = holdout.ensure(SPEC, context, client=store)
    found = holdout.stored(SPEC, store)
    assert found is not None and found[1] == first.sha256
    experiment = store.get_experiment_by_name(holdout.EXPERIMENT)
    assert experiment is not None
    runs = store.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [found[0]]

    fresh = replace(context, data_dir=tmp_path / "runner" / "data")  # an empty data folder
    pulled = holdout.ensure(SPEC, fresh, client=store)
    assert pulled.sha256 == first.sha256 and pulled.path.parent.parent == fresh.data_dir
    assert pulled.path.read_bytes() == first.path.read_bytes()

    other = tmp_path / "other" / "data"  # a host holding a different, intact hold-out
    shutil.copytree(context.data_dir / holdout.HOLDOUT_DIR, other / holdout.HOLDOUT_DIR)
    sidecar = holdout.holdout_path(other, SPEC.key).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    path = holdout.holdout_path(other, SPEC.key)
    path.write_bytes(path.read_bytes() + b"\0")
    sidecar.write_text(json.dumps(meta | {"sha256": holdout.file_sha256(path)}))
    assert holdout.ensure(SPEC, replace(context, data_dir=other), client=store).sha256 == (
        first.sha256
    )

    refreshed = holdout.ensure(SPEC, fresh, refresh=True, client=store)
    now = holdout.stored(SPEC, store)
    assert now is not None and now[0] != found[0] and now[1] == refreshed.sha256


def test_the_focus_area_slices_cover_subject_tenure_and_activity(
    outcome: Outcome, context: TrainingContext
) -> None:
    data = holdout.load(SPEC.key, context.data_dir).data
    model = outcome.python_model

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return model.predict(None, frame)

    slices = SPEC.slice_reports(context, data, predict)
    assert {"new students", "long-standing students"} <= set(slices)
    assert {"low recent activity", "high recent activity"} <= set(slices)
    subjects = [name for name in slices if name.startswith("subject ")]
    assert len(subjects) == data.holdout["subject"].nunique() > 1
    assert sum(slices[s]["n"] for s in subjects) == len(data.holdout)
    assert np.isclose(
        slices["new students"]["n"] + slices["long-standing students"]["n"], len(data.holdout)
    )
    checks = SPEC.behaviour_checks(context, data, predict)
    assert all(ok for ok, _ in checks.values()), checks
    assert PromotionParams.from_params(context.params).min_uplift > 0


def test_unknown_promotion_params_are_rejected() -> None:
    from core.exceptions import ConfigError

    with pytest.raises(ConfigError, match="promotion: unknown keys"):
        PromotionParams.from_params({"promotion": {"min_upflit": 0.1}})
    assert issubclass(PromotionLockedError, RegistryError)


@pytest.mark.parametrize(
    ("codes", "combined"),
    [([3, 3, 3, 3], 3), ([3, 0, 3, 3], 0), ([0, 2, 3, 3], 2), ([2, 1, 0, 3], 1), ([], 0)],
)
def test_one_exit_code_for_several_models(codes: list[int], combined: int) -> None:
    assert combined_exit_code(codes) == combined


def test_a_crash_on_one_model_leaves_the_others_judged(
    monkeypatch: pytest.MonkeyPatch,
    context: TrainingContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`promote --model all`: a bug on one model is reported by name and exits 1 only
    after every other model was judged."""
    monkeypatch.setenv("PREPIQ_DATA_DIR", str(context.data_dir))
    get_settings.cache_clear()
    judged: list[str] = []

    def judge(spec: Any, ctx: Any, **_: Any) -> PromotionResult:
        # MOCK: the gate itself is tested above; here only the CLI's loop over the models.
        judged.append(spec.key)
        if spec.key == "topic-recommender":
            raise ValueError("a bug")
        return PromotionResult(spec.name, spec.key, "kept", "1", None, "audit-run")

    monkeypatch.setattr("registry.promotion.promote", judge)
    assert main(["promote", "--model", "all"]) == 1
    assert judged == list(MODELS)
    err = capsys.readouterr().err
    assert "prepiq: internal error: topic-recommender: ValueError: a bug" in err
    saved = json.loads((context.data_dir / "promotion" / "topic-recommender.json").read_text())
    assert saved == {
        "model": "topic-recommender",
        "decision": "error",
        "error": "ValueError: a bug",
    }
    get_settings.cache_clear()
