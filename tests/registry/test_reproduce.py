"""A training run pushes its snapshot to the DVC remote, and `prepiq reproduce` gives its
logged hold-out metrics back from the remote and the run's records alone: a real
training run (focus-area, one trial) in a private MLflow store, a real local remote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core.config import PROJECT_ROOT, get_settings
from features.snapshot import RAW_DIR, read_manifest
from features.versioning import dvc_hash, missing_objects
from pipelines.train import train_flow
from prepiq.cli import main
from registry.reproduce import compare, nested
from training.question_ranker.spec import SPEC as QUESTION_RANKER


@pytest.mark.usefixtures("prefect_harness", "small_data_params")
def test_a_run_pushes_its_snapshot_and_reproduce_gives_back_its_metrics(
    clean_snapshot: Path,
    private_tracking_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    shutil.copytree(clean_snapshot, data / RAW_DIR)
    remote = tmp_path / "remote"
    monkeypatch.setenv("PREPIQ_DVC_REMOTE_URL", str(remote))
    get_settings.cache_clear()
    trained = train_flow(models=["focus-area"], trials=1, data_dir=data, ingest=False)
    summary = trained.models[0]
    client = MlflowClient(tracking_uri=private_tracking_store, registry_uri=private_tracking_store)
    run = client.get_run(summary.run_id)
    tags = run.data.tags

    # The run recorded the exact hash it pushed, and where; the remote holds all of it.
    assert tags["data_version"] == dvc_hash(data / RAW_DIR)
    assert tags["data_pushed"] == "true"
    assert tags["data_remote"] == str(remote)
    assert missing_objects(tags["data_version"], str(remote)) == []

    # Nothing of the training data is left, and the current params.yaml is another one:
    # the reproduction has only the remote and the run's records to go by.
    shutil.rmtree(data)
    monkeypatch.setenv("PREPIQ_PARAMS_FILE", str(PROJECT_ROOT / "params.yaml"))
    get_settings.cache_clear()
    version = summary.version
    scratch = tmp_path / "scratch"
    command = ["reproduce", "--model", "focus-area", "--version", version]
    assert main([*command, "--into", str(scratch)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("holdout.")}
    assert f"all {len(logged)} hold-out metrics of the version reproduced" in out
    restored = read_manifest(scratch / RAW_DIR)
    assert restored is not None and restored.content_hash == tags["snapshot_content_hash"]
    saved = json.loads((scratch / "reproduction.json").read_text())
    assert saved["ok"] and saved["data_version"] == tags["data_version"]
    again = {c["name"]: c["reproduced"] for c in saved["checks"]}
    assert again == pytest.approx(logged, rel=1e-9)
    assert (scratch / "evaluation" / "focus-area" / "evaluation.json").exists()

    # A logged figure the version does not give back is named, exit 1 (in a temporary
    # folder this time, removed afterwards).
    f1 = run.data.metrics["holdout.model.f1"]
    client.log_metric(run.info.run_id, "holdout.model.f1", f1 + 0.05)
    assert main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"holdout.model.f1 differs (logged {f1 + 0.05:.6g}, now {f1:.6g})" in err
    assert "holdout.model.accuracy" not in err

    # The snapshot gone from the remote: one line saying so and where the run pushed it.
    shutil.rmtree(remote)
    assert main([*command, "--into", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert f"does not hold the snapshot {tags['data_version']}" in err
    assert f"(at training: data_remote {remote}, data_pushed true)" in err
    assert main(["reproduce", "--model", "focus-area", "--version", "99"]) == 2
    assert "prepiq-focus-area has no version 99" in capsys.readouterr().err


def test_every_metric_of_either_side_is_judged() -> None:
    logged = {
        "holdout.model.f1": 0.8,
        "holdout.model.brier": 0.0,
        "holdout.model.n": 120.0,
        "holdout.against_truth.model.f1": 0.9,
        "holdout.oracle.f1": 0.95,
        "holdout.gap_closed.f1.value": 0.4,
    }
    reproduced = {
        "holdout.model.f1": 0.8 * (1 + 1e-9),  # float noise passes
        "holdout.model.brier": 1e-15,
        "holdout.model.ece": 0.05,  # training never logged it: the code changed since
    }
    checks = {c.name: c.status for c in compare(logged, reproduced, truth_available=False)}
    assert checks == {
        "holdout.model.f1": "match",
        "holdout.model.brier": "match",
        "holdout.model.n": "missing",
        "holdout.model.ece": "not logged",
        "holdout.against_truth.model.f1": "skipped",  # no truth folder on this machine
        "holdout.oracle.f1": "skipped",  # the oracle and the gap come from the truth too
        "holdout.gap_closed.f1.value": "skipped",
    }
    with_truth = compare(logged, reproduced, truth_available=True)
    assert {c.name for c in with_truth if c.failed} == {
        "holdout.model.n",
        "holdout.model.ece",
        "holdout.against_truth.model.f1",
        "holdout.oracle.f1",
        "holdout.gap_closed.f1.value",
    }
    assert compare({"holdout.model.f1": 0.8}, {"holdout.model.f1": 0.8001})[0].status == "differs"


def test_a_training_report_of_other_fits_is_mapped_or_set_aside() -> None:
    # The ranker's shape: pooled figures of per-year refits, the last year's ranker being
    # the registered one's fit, and a section evaluate gives that training never logged.
    logged = {
        "holdout.model.ndcg_10": 0.63,
        "holdout.holdout_by_year.2025.model.ndcg_10": 0.57,
        "holdout.holdout_by_year.2026.model.ndcg_10": 0.76,
        "holdout.holdout_by_year.2026.baseline_frequency.ndcg_10": 0.61,
        "holdout.cv_ndcg": 0.5,
    }
    reproduced = {
        "holdout.model.ndcg_10": 0.76,
        "holdout.baseline_frequency.ndcg_10": 0.62,
        "holdout.slices.n": 3.0,
    }
    sections = QUESTION_RANKER.registered_sections(nested(logged))
    assert sections == {
        "model": "holdout_by_year.2026.model",
        "baseline_frequency": "holdout_by_year.2026.baseline_frequency",
    }
    checks = {c.name: c.status for c in compare(logged, reproduced, sections)}
    assert checks == {
        "holdout.holdout_by_year.2026.model.ndcg_10": "match",
        "holdout.holdout_by_year.2026.baseline_frequency.ndcg_10": "differs",
        "holdout.holdout_by_year.2025.model.ndcg_10": "training only",
        "holdout.model.ndcg_10": "training only",
        "holdout.cv_ndcg": "training only",
        "holdout.slices.n": "not logged",
    }
