"""The local BentoML model store as a checked cache of registered versions: serving keeps
each model's versions here as `prepiq-<key>` entries, labelled with their MLflow name,
version and run, so a host that has served a champion once can serve it again without
the registry.

A version is fetched from the registry (`fetch`) by downloading its artifacts, comparing
every file with the registry's listing (path and size), and importing the download with
a digest of its files in the entry's metadata. Before an entry is served its files are
hashed again (`intact`): a truncated or edited entry is skipped, never loaded. Fetches
of one model are serialised across processes (a file lock in the store), so the workers
of one host download a new champion once.

The last aliases read from the registry are kept beside the store (`remember_aliases`),
so a start while the registry is down serves the last known champions, not merely the
newest entries.

bentoml is imported inside the functions that use it: it reads BENTOML_HOME when first
imported, and the settings set that only once a command or the service has started."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts, list_artifacts

from core.exceptions import RegistryError
from core.logging import get_logger

log = get_logger("prepiq.registry.model_store")

PREFIX = "prepiq-"
MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow keeps the MLflow model in an entry
DIGEST = "content_sha256"  # entry metadata: the digest of the model's files at import
LOCK_TIMEOUT_SECONDS = 600.0
ALIASES_FILE = "prepiq-registry-aliases.json"
# Model name -> alias -> version, as the registry holds them.
Aliases = dict[str, dict[str, str]]


def store_name(key: str) -> str:
    """The store name of a model key (`prepiq-focus-area`)."""
    return f"{PREFIX}{key}"


def store_home() -> Path:
    """The BentoML home (BENTOML_HOME, set by the settings before bentoml is imported)."""
    from bentoml._internal.configuration.containers import BentoMLContainer  # noqa: PLC0415

    return Path(BentoMLContainer.bentoml_home.get())


def entries(key: str, version: str | None = None) -> list[Any]:
    """The store entries of model `key` (of one MLflow `version` when given), newest first."""
    import bentoml  # noqa: PLC0415
    from bentoml.exceptions import NotFound  # noqa: PLC0415

    try:
        listed = bentoml.models.list(store_name(key))
    except NotFound:  # no entry of the model at all
        return []
    found = [e for e in listed if version is None or e.info.labels.get("mlflow_version") == version]
    return sorted(found, key=lambda e: e.creation_time, reverse=True)


def files_digest(folder: Path) -> str:
    """sha256 over every file under `folder` (relative path and content), in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def intact(entry: Any) -> bool:
    """The entry's model files hash to the digest recorded when it was imported (False for
    an entry without one: nothing vouches for it)."""
    expected = entry.info.metadata.get(DIGEST)
    folder = Path(entry.path_of(MODEL_FOLDER))
    if not expected or not folder.is_dir():
        return False
    try:
        return files_digest(folder) == expected
    except OSError:
        return False


def newest_intact(key: str, version: str | None = None) -> Any | None:
    """The newest intact entry of `key` (of `version` when given); damaged ones are logged
    and skipped."""
    for entry in entries(key, version):
        if intact(entry):
            return entry
        log.warning("store entry damaged: skipped", entry=str(entry.tag))
    return None


def _registry_files(client: MlflowClient, source: str) -> dict[str, int]:
    """Relative path -> size of every file of a model version's artifacts, as the
    registry lists them."""
    files: dict[str, int] = {}
    pending = [""]
    while pending:
        folder = pending.pop()
        uri = f"{source.rstrip('/')}/{folder}" if folder else source
        for item in list_artifacts(artifact_uri=uri, tracking_uri=client.tracking_uri):
            relative = f"{folder}/{Path(item.path).name}" if folder else Path(item.path).name
            if item.is_dir:
                pending.append(relative)
            else:
                files[relative] = int(item.file_size or 0)
    return files


def _check_download(folder: Path, expected: dict[str, int], what: str) -> None:
    """The download holds exactly the registry's files, each of the listed size."""
    found = {
        p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()
    }
    missing = sorted(set(expected) - set(found))
    wrong = sorted(f for f in set(expected) & set(found) if expected[f] != found[f])
    if missing or wrong or not expected:
        raise RegistryError(
            f"{what}: the download does not match the registry's listing "
            f"(missing {missing or 'none'}, size differs {wrong or 'none'}, "
            f"{len(expected)} files listed)"
        )


def fetch(client: MlflowClient, name: str, key: str, version: str) -> Any:
    """The newest intact store entry of `name` v`version`, downloaded from the registry
    and imported first when the store has none. Raises RegistryError naming the model and
    the version when the registry cannot give it whole."""
    import bentoml  # noqa: PLC0415

    what = f"{name} v{version}"
    lock_dir = store_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{store_name(key)}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
        cached = newest_intact(key, version)
        if cached is not None:
            return cached
        try:
            model_version = client.get_model_version(name, version)
            source = client.get_model_version_download_uri(name, version)
            expected = _registry_files(client, source)
            staging = Path(tempfile.mkdtemp(prefix=f"{store_name(key)}-", dir=store_home()))
            try:
                local = Path(
                    download_artifacts(
                        artifact_uri=source,
                        dst_path=str(staging),
                        tracking_uri=client.tracking_uri,
                    )
                )
                _check_download(local, expected, what)
                entry = bentoml.mlflow.import_model(
                    store_name(key),
                    model_uri=str(local),
                    labels={
                        "mlflow_name": name,
                        "mlflow_version": str(version),
                        "run_id": str(model_version.run_id),
                    },
                    metadata={DIGEST: files_digest(local), "fetched_at": _now()},
                )
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except RegistryError:
            raise
        except Exception as exc:  # the registry or its artifact store failed: name it
            raise RegistryError(f"{what}: cannot fetch from the registry: {exc}") from exc
        if not intact(entry):
            bentoml.models.delete(entry.tag)
            raise RegistryError(f"{what}: the imported entry does not match its download")
        log.info("fetched from the registry", model=name, version=version, entry=str(entry.tag))
        return entry


def remember_aliases(aliases: Aliases) -> None:
    """Keep the registry's aliases beside the store (written whole, then renamed)."""
    path = store_home() / ALIASES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"read_at": _now(), "aliases": aliases}, indent=2) + "\n")
    partial.replace(path)


def remembered_aliases() -> tuple[Aliases, str] | None:
    """The aliases last read from the registry on this host and when (None if never)."""
    path = store_home() / ALIASES_FILE
    try:
        document = json.loads(path.read_text())
        return dict(document["aliases"]), str(document["read_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
