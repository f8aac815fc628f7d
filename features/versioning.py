"""Data versions as DVC sees them: the hash DVC records for a snapshot or feature folder
(in `dvc.lock`), computed without committing, and committing it to the DVC cache and the
default remote (a local folder under PREPIQ_HOME unless configured otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

from core.config import PROJECT_ROOT


def dvc_hash(path: Path, repo_root: Path = PROJECT_ROOT) -> str:
    """The md5 DVC records for `path` (a directory hash ends in `.dir`)."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    with Repo(str(repo_root)) as repo:
        odb = repo.cache.local
        _, _, obj = build(odb, str(path.resolve()), odb.fs, "md5", dry_run=True)
        return str(obj.hash_info.value)


def commit_stages(stages: list[str], repo_root: Path = PROJECT_ROOT, push: bool = True) -> None:
    """Record the current outputs of `stages` in dvc.lock and the DVC cache (and push them
    to the default remote), so the data version a run records can be pulled later."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        for stage in stages:
            repo.commit(f"{repo_root / 'dvc.yaml'}:{stage}", force=True)
        if push:
            repo.push()
