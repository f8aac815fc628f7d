"""Snapshots pushed to and restored from a real DVC remote (a local folder) through DVC's
own API: the remote holds every object of the hash pushed, a restore gives back the same
bytes and hash, and the failures say what is wrong. Where a run's push may fail quietly
and where it must stop training."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, Settings
from core.exceptions import DataVersionError
from features.versioning import dvc_hash, fetch_snapshot, missing_objects, push_snapshot
from training.tracking import publish_snapshot

DVC = str(PROJECT_ROOT / ".venv" / "bin" / "dvc")


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A small folder standing in for data/raw (the functions see only files)."""
    folder = tmp_path / "data" / "raw"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"tables": {}}\n')
    (folder / "users.parquet").write_bytes(bytes(range(256)) * 64)
    (folder / "tests.parquet").write_bytes(b"tests" * 1000)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_pushed_snapshot_is_in_the_remote_and_restores_byte_for_byte(
    snapshot: Path, tmp_path: Path
) -> None:
    remote = str(tmp_path / "remote")
    pushed = push_snapshot(snapshot, remote)
    assert pushed.data_version == dvc_hash(snapshot) and pushed.data_version.endswith(".dir")
    assert pushed.remote == remote
    assert pushed.transferred == 4  # three files and the folder's listing
    assert missing_objects(pushed.data_version, remote) == []
    assert push_snapshot(snapshot, remote).transferred == 0  # the remote holds them all

    restored = tmp_path / "scratch" / "raw"
    assert fetch_snapshot(pushed.data_version, restored, remote) == remote
    assert _files(restored) == _files(snapshot)
    # Restoring again into the same folder keeps it; into a folder of other data, refuses.
    fetch_snapshot(pushed.data_version, restored, remote)
    (snapshot / "users.parquet").write_bytes(b"changed")
    with pytest.raises(DataVersionError, match="holds other data"):
        fetch_snapshot(pushed.data_version, snapshot, remote)


def test_a_snapshot_the_remote_lacks_is_named(snapshot: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    pushed = push_snapshot(snapshot, str(remote))
    with pytest.raises(DataVersionError, match=r"does not hold the snapshot 0+\.dir"):
        fetch_snapshot("0" * 32 + ".dir", tmp_path / "a", str(remote))
    # One file object lost from the remote: listed, and nothing is restored.
    users = dvc_hash(snapshot / "users.parquet")
    next(remote.rglob(users[2:])).unlink()
    assert missing_objects(pushed.data_version, str(remote)) == [users]
    with pytest.raises(DataVersionError, match=r"\(1 objects missing\)"):
        fetch_snapshot(pushed.data_version, tmp_path / "b", str(remote))
    assert not (tmp_path / "b").exists()
    # A damaged object: the restore does not pass for the snapshot.
    push_snapshot(snapshot, str(remote))
    next(remote.rglob(dvc_hash(snapshot / "tests.parquet")[2:])).write_bytes(b"damaged")
    with pytest.raises(DataVersionError, match=f"hashes to .*, not {pushed.data_version}"):
        fetch_snapshot(pushed.data_version, tmp_path / "c", str(remote))


def test_a_failed_push_stops_training_only_when_the_remote_was_asked_for(
    snapshot: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    unwritable = str(tmp_path / "a-file" / "remote")
    with pytest.raises(DataVersionError, match="training stopped, as PREPIQ_DVC_REMOTE_URL"):
        publish_snapshot(snapshot, Settings(dvc_remote_url=unwritable))

    # A repository without git (as in the training image) and without a default remote:
    # the run goes on, and its tags say what it trained on and that it was not pushed.
    repo = tmp_path / "image"
    repo.mkdir()
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=repo, check=True)
    tags = publish_snapshot(snapshot, Settings(dvc_remote_url=None), repo_root=repo)
    assert tags["data_version"] == dvc_hash(snapshot)
    assert tags["data_pushed"].startswith("failed: ") and "no remote" in tags["data_pushed"]
    assert "data_remote" not in tags

    # With a default remote there, it is pushed without any commit.
    remote = tmp_path / "image-remote"
    subprocess.run([DVC, "remote", "add", "-d", "volume", str(remote)], cwd=repo, check=True)
    tags = publish_snapshot(snapshot, Settings(dvc_remote_url=None), repo_root=repo)
    assert tags == {
        "data_version": dvc_hash(snapshot),
        "data_remote": str(remote),
        "data_pushed": "true",
    }
    assert missing_objects(tags["data_version"], str(remote), repo_root=repo) == []
