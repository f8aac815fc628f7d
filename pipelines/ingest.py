"""The ingest flow: pull every contract table from the source into a point-in-time
snapshot under `data/raw/`, incrementally when a previous snapshot allows it, and pass it
through the data gate before it replaces the current snapshot.

Each task calls a plain function of `features.snapshot`; Prefect adds retries with backoff
on transient database errors, logs per task and the run record. A source that stays
unreachable ends the flow with SourceUnavailableError naming the host; the previous
snapshot is left untouched (the new one is built in a staging folder and switched in last).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff
from sqlalchemy.exc import DBAPIError, OperationalError

from core.config import get_settings, load_params
from core.database import check_connection, describe_host, error_reason, get_engine
from core.exceptions import DataValidationError, SourceUnavailableError
from features import snapshot
from features.extract import table_spec, table_specs
from features.migrate import require_contract
from features.validation import (
    GateReport,
    GateSettings,
    report_path,
    validate_snapshot,
    write_report,
)
from pipelines.alerts import alert_on_failure, send_alert


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only what a retry can fix: a dropped or refused connection."""
    error = getattr(state, "data", None)
    if isinstance(error, SourceUnavailableError | OperationalError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


@task(name="check-source", retry_condition_fn=_transient)
def check_source(url: str) -> str:
    """Reach the source and check it follows the contract."""
    engine = get_engine(url)
    check_connection(engine)
    require_contract(engine)
    return describe_host(engine.url)


@task(name="ingest-table", retry_condition_fn=_transient)
def ingest_table(
    url: str,
    table: str,
    staging: Path,
    previous_dir: Path | None,
    previous: snapshot.TableSnapshot | None,
    as_of: datetime,
    started: datetime,
    chunk_rows: int,
) -> snapshot.TableSnapshot:
    """Write one table of the new snapshot (full, or merged with what changed)."""
    spec = table_spec(table)
    result = snapshot.ingest_table(
        get_engine(url),
        spec,
        staging,
        previous_dir,
        previous,
        as_of=as_of,
        started=started,
        chunk_rows=chunk_rows,
    )
    get_run_logger().info(
        "%s: %s rows (%s read, %s deleted, %s)",
        table,
        result.rows,
        result.rows_read,
        result.rows_deleted,
        result.mode,
    )
    return result


@task(name="validate-snapshot")
def validate(
    snapshot_dir: Path, as_of: datetime, previous_rows: dict[str, int], report_path: Path
) -> GateReport:
    """Run the Great Expectations gate over a snapshot and save its JSON report."""
    report = validate_snapshot(
        snapshot_dir,
        as_of=as_of,
        previous_rows=previous_rows,
        settings=GateSettings.from_params(load_params()),
    )
    write_report(report, report_path)
    logger = get_run_logger()
    (logger.info if report.success else logger.error)(report.summary())
    return report


@flow(name="prepiq-ingest", log_prints=True, on_failure=[alert_on_failure])
def ingest_flow(
    source_url: str | None = None,
    data_dir: Path | None = None,
    as_of: datetime | None = None,
    full: bool = False,
) -> snapshot.SnapshotManifest:
    """Snapshot the source as of `as_of` (default: now) into `data_dir/raw`."""
    settings = get_settings()
    url = source_url or settings.resolved_source_url
    data = data_dir or settings.data_dir
    params = load_params().get("ingest", {})
    retries = int(params.get("retries", 3))
    delays = exponential_backoff(float(params.get("retry_delay_seconds", 2)))(retries)
    chunk_rows = int(params.get("chunk_rows", 100_000))
    started = datetime.now(UTC)
    as_of = (as_of or started).astimezone(UTC)

    data.mkdir(parents=True, exist_ok=True)
    snapshot.recover(data)
    try:
        check_source.with_options(retries=retries, retry_delay_seconds=delays)(url)
    except (SourceUnavailableError, OperationalError) as exc:
        engine = get_engine(url)
        raise SourceUnavailableError(
            f"source {describe_host(engine.url)} stayed unreachable after "
            f"{retries} retries: {error_reason(exc)}; the previous snapshot is unchanged"
        ) from exc

    engine = get_engine(url)
    manifest = snapshot.new_manifest(engine, as_of)
    current = data / snapshot.RAW_DIR
    current_manifest = snapshot.read_manifest(current)
    previous = snapshot.usable_previous(current_manifest, manifest, full)
    staging = snapshot.staging_dir(data)
    try:
        futures = {
            spec.name: ingest_table.with_options(
                retries=retries, retry_delay_seconds=delays
            ).submit(
                url,
                spec.name,
                staging,
                current if previous else None,
                previous.tables.get(spec.name) if previous else None,
                as_of,
                started,
                chunk_rows,
            )
            for spec in table_specs()
        }
        manifest.tables = {name: future.result() for name, future in futures.items()}
    except (SourceUnavailableError, OperationalError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SourceUnavailableError(
            f"lost the source {describe_host(engine.url)} during ingest: {error_reason(exc)}; "
            "the previous snapshot is unchanged"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest.previous_rows = (
        {name: table.rows for name, table in current_manifest.tables.items()}
        if current_manifest
        else {}
    )
    snapshot.write_manifest(staging, manifest)
    report = validate(staging, as_of, manifest.previous_rows, report_path(data))
    if not report.success:
        rejected = snapshot.reject(staging, data)
        send_alert(
            "data_gate_blocked",
            f"data gate blocked the snapshot as of {as_of.isoformat()}: {report.summary()}",
            {"report": str(report_path(data)), "rejected_snapshot": str(rejected)},
        )
        raise DataValidationError(
            f"{report.summary()}. The snapshot was not published (kept in {rejected}); "
            f"full report: {report_path(data)}"
        )
    manifest.seconds = round((datetime.now(UTC) - started).total_seconds(), 2)
    snapshot.publish(staging, manifest, data)
    return manifest
