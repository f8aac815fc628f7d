"""One promotion of a model at a time. On a PostgreSQL tracking store the lock is a
session advisory lock in that database (so promotions from several machines sharing the
store exclude each other); otherwise a lock file under PREPIQ_HOME (one machine)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from filelock import FileLock, Timeout
from sqlalchemy.engine import make_url

from core.exceptions import PromotionLockedError

POLL_SECONDS = 0.2


def advisory_key(model: str) -> int:
    """A stable signed 64-bit key for the model's advisory lock."""
    digest = hashlib.sha256(f"prepiq-promotion:{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _locked(model: str, timeout: float) -> PromotionLockedError:
    return PromotionLockedError(
        f"{model}: another promotion or rollback of this model held its lock for over "
        f"{timeout:.0f} s (params.yaml promotion.lock_timeout_seconds); try again when it ends"
    )


@contextmanager
def promotion_lock(model: str, tracking_uri: str, lock_dir: Path, timeout: float) -> Iterator[None]:
    """Hold the model's promotion lock; waits up to `timeout` seconds for another holder."""
    if tracking_uri.startswith("postgresql"):
        with _advisory_lock(model, tracking_uri, timeout):
            yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"promotion-{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}.lock"
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout as exc:
        raise _locked(model, timeout) from exc
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _advisory_lock(model: str, tracking_uri: str, timeout: float) -> Iterator[None]:
    # A dedicated connection: the session lock lives exactly as long as it (a crashed
    # promotion releases it when its connection drops).
    conninfo = make_url(tracking_uri).set(drivername="postgresql").render_as_string(False)
    key = advisory_key(model)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() >= deadline:
                raise _locked(model, timeout)
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
