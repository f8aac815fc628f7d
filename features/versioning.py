"""Data versions as DVC sees them: the hash DVC records for a snapshot folder (in
`dvc.lock`), pushing a snapshot's objects to a DVC remote by that hash, and restoring a
snapshot from the remote by its hash.

Everything goes through DVC's own API (`dvc.repo.Repo` for the configuration and the
remote, `dvc_data` for hashing, transfer and checkout), so the remote's layout is exactly
what `dvc push` writes and `dvc pull` reads. Pushing needs no git commit and no DVC stage:
it is what `dvc add --to-remote` does, straight from the folder to the remote (the local
cache is not filled), so it works in the training image, where DVC runs without git
(`core.no_scm`).

The remote is `PREPIQ_DVC_REMOTE_URL` when given (any URL DVC takes, or a folder), else the
repository's default remote (`.dvc/config`: a folder under `.prepiq/`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dvc.exceptions import DvcException
from dvc.fs import LocalFileSystem
from dvc.repo import Repo
from dvc_data.hashfile import load
from dvc_data.hashfile.build import build
from dvc_data.hashfile.checkout import checkout
from dvc_data.hashfile.db import HashFileDB
from dvc_data.hashfile.hash_info import HashInfo
from dvc_data.hashfile.transfer import transfer
from dvc_data.hashfile.tree import Tree

from core.config import PROJECT_ROOT
from core.exceptions import DataVersionError
from core.security import redact_url

# The name the remote of PREPIQ_DVC_REMOTE_URL gets in DVC's configuration (in memory only).
OVERRIDE_REMOTE = "prepiq-env"


@dataclass(frozen=True)
class PushedSnapshot:
    """A snapshot the remote holds: its DVC hash, where, and how many objects were new."""

    data_version: str  # DVC's md5 of the folder (a directory hash ends in `.dir`)
    remote: str  # the remote's URL, credentials hidden
    transferred: int  # objects the remote did not hold yet (0: it had them all)


@contextmanager
def _repo(repo_root: Path, remote_url: str | None = None) -> Iterator[Repo]:
    """The DVC repository at `repo_root`, with `remote_url` as its default remote when given."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # read when a command runs, not on import
    config = None
    if remote_url:
        # A relative folder is taken from the working directory, as on the command line
        # (DVC resolves relative URLs of its config files against the file instead).
        url = remote_url if "://" in remote_url else str(Path(remote_url).expanduser().resolve())
        config = {"core": {"remote": OVERRIDE_REMOTE}, "remote": {OVERRIDE_REMOTE: {"url": url}}}
    with Repo(str(repo_root), config=config) as repo:
        yield repo


def _remote_odb(repo: Repo, command: str) -> tuple[HashFileDB, str]:
    """The default remote's object store and its URL (credentials hidden)."""
    remote = repo.cloud.get_remote(None, command)
    odb = repo.cloud.get_remote_odb(None, command)
    return odb, redact_url(remote.fs.unstrip_protocol(remote.path))


def dvc_hash(path: Path, repo_root: Path = PROJECT_ROOT) -> str:
    """The md5 DVC records for `path` (a directory hash ends in `.dir`)."""
    with _repo(repo_root) as repo:
        odb = repo.cache.local
        _, _, obj = build(odb, str(path.resolve()), odb.fs, "md5", dry_run=True)
        return str(obj.hash_info.value)


def push_snapshot(
    path: Path, remote_url: str | None = None, repo_root: Path = PROJECT_ROOT
) -> PushedSnapshot:
    """Copy the objects of the folder `path` that the remote lacks into it, and return
    the DVC hash of what was pushed. Raises `DataVersionError` naming the remote when the
    push fails (no remote configured, unreachable, not writable)."""
    where = remote_url or "the default DVC remote"
    try:
        with _repo(repo_root, remote_url) as repo:
            odb, where = _remote_odb(repo, "push")
            # Built against the local cache for its state database, which remembers the
            # hashes of unchanged files: each of a flow's runs pushes the same snapshot,
            # and only the first one reads every file. Nothing is written to the cache.
            staging, _, obj = build(repo.cache.local, str(path.resolve()), LocalFileSystem(), "md5")
            result = transfer(staging, odb, {obj.hash_info}, hardlink=False, shallow=False)
    except (DvcException, OSError) as exc:
        raise DataVersionError(f"cannot push the snapshot {path} to {where}: {exc}") from exc
    if result.failed:
        raise DataVersionError(
            f"pushing the snapshot {path} to {where}: {len(result.failed)} objects failed"
        )
    return PushedSnapshot(str(obj.hash_info.value), where, len(result.transferred))


def missing_objects(
    data_version: str, remote_url: str | None = None, repo_root: Path = PROJECT_ROOT
) -> list[str]:
    """The objects of the snapshot `data_version` that the remote lacks ([] when it holds
    the whole snapshot; the hash itself when it does not even hold the listing)."""
    with _repo(repo_root, remote_url) as repo:
        odb, _ = _remote_odb(repo, "fetch")
        return _missing(odb, data_version)


def _missing(odb: HashFileDB, data_version: str) -> list[str]:
    try:
        tree = load(odb, HashInfo("md5", data_version))
    except FileNotFoundError:
        return [data_version]
    assert isinstance(tree, Tree)
    oids = [str(hash_info.value) for _, _, hash_info in tree]
    present = set(odb.oids_exist(oids))  # type: ignore[no-untyped-call]
    return [oid for oid in oids if oid not in present]


def fetch_snapshot(
    data_version: str, dest: Path, remote_url: str | None = None, repo_root: Path = PROJECT_ROOT
) -> str:
    """Restore the snapshot `data_version` from the remote into the folder `dest` (missing
    or empty; one that already holds exactly this snapshot is kept as it is) and check
    the result against the hash. Returns the remote's URL. The local cache is not used:
    a scratch restore leaves nothing behind but `dest`."""
    if not data_version.endswith(".dir"):
        raise DataVersionError(f"{data_version!r} is not the DVC hash of a snapshot folder")
    where = remote_url or "the default DVC remote"
    try:
        with _repo(repo_root, remote_url) as repo:
            odb, where = _remote_odb(repo, "fetch")
            if dest.exists() and any(dest.iterdir()):
                if dvc_hash(dest, repo_root) == data_version:
                    return where  # restored before: nothing to fetch
                raise DataVersionError(f"{dest} holds other data; restore into an empty folder")
            missing = _missing(odb, data_version)
            if missing:
                raise DataVersionError(
                    f"the remote {where} does not hold the snapshot {data_version} "
                    f"({len(missing)} objects missing): it was never pushed there"
                )
            checkout(str(dest), LocalFileSystem(), load(odb, HashInfo("md5", data_version)), odb)
    except (DvcException, OSError) as exc:
        raise DataVersionError(
            f"cannot restore the snapshot {data_version} from {where}: {exc}"
        ) from exc
    restored = dvc_hash(dest, repo_root)
    if restored != data_version:  # a damaged copy in the remote must not pass for the data
        raise DataVersionError(
            f"the snapshot restored from {where} into {dest} hashes to {restored}, "
            f"not {data_version}"
        )
    return where
