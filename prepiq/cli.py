"""`prepiq`: the one entry point for people, Makefile, DVC and CI.

Errors a user can act on (a bad value, an unreachable database, a URL of the wrong kind)
print one line naming the problem and exit with code 2; no traceback reaches the user.

Each command imports the layer it runs inside its function: `prepiq --help` and a
mistyped option answer at once, without loading training, Prefect and MLflow.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# Typer 0.29 vendors click; its exceptions live here (pinned in requirements.lock).
from typer._click import exceptions as click_exceptions

from core.config import PROJECT_ROOT, get_settings, load_params
from core.exceptions import ConfigError, PrepIQError
from core.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from training.model_spec import TrainingContext

app = typer.Typer(
    name="prepiq",
    help="PrepIQ ML platform: data, training, registry and serving for the PrepIQ app.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Apply the data-contract migrations to a database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
holdout_app = typer.Typer(
    help="The fixed hold-out each model is judged on by the promotion gate.", no_args_is_help=True
)
app.add_typer(holdout_app, name="holdout")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL (sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST:PORT/DB). "
        "Default: PREPIQ_SOURCE_URL, else the embedded SQLite source.",
        show_default=False,
    ),
]


@app.callback()
def _setup() -> None:
    settings = get_settings()
    settings.apply_environment()
    configure_logging(settings.log_level, settings.log_format)


@db_app.command("upgrade")
def db_upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the contract tables in a database (any supported URL)."""
    from core.database import get_engine
    from core.security import redact_url
    from features.migrate import upgrade

    engine = get_engine(url)
    at = upgrade(engine, revision)
    get_logger("prepiq.db").info("migrated", database=redact_url(str(engine.url)), revision=at)
    typer.echo(
        f"{redact_url(engine.url.render_as_string(hide_password=False))} is at revision {at}"
    )


@db_app.command("downgrade")
def db_downgrade(
    url: UrlOption = None,
    revision: Annotated[
        str, typer.Option(help="Target revision ('base' drops the contract).")
    ] = "base",
) -> None:
    """Migrate a database down (default: remove every contract table)."""
    from core.database import get_engine
    from features.migrate import downgrade

    engine = get_engine(url)
    at = downgrade(engine, revision)
    typer.echo(f"{engine.url.render_as_string(hide_password=True)} is at revision {at or 'base'}")


@db_app.command("current")
def db_current(url: UrlOption = None) -> None:
    """Print the migration revision a database is at."""
    from core.database import check_connection, get_engine
    from features.migrate import current_revision, head_revision

    engine = get_engine(url)
    check_connection(engine)
    at = current_revision(engine)
    typer.echo(f"{at or 'base'} (code head: {head_revision()})")


@db_app.command("check")
def db_check(url: UrlOption = None) -> None:
    """Check that a database (a Supabase project, say) follows the data contract."""
    from core.database import get_engine
    from features.migrate import require_contract

    engine = get_engine(url)
    require_contract(engine)
    typer.echo(f"{engine.url.render_as_string(hide_password=True)} follows the data contract")


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(
            f"expected YYYY-MM-DD, got {value!r}", param_hint="'--end-date'"
        ) from exc


@app.command()
def seed(
    students: Annotated[
        int | None,
        typer.Option(
            min=1, help="Students to simulate. Default: synthetic.students in params.yaml."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", min=0, help="Random seed; same seed, same rows. Default: params.yaml."
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(min=60, help="Days of app history. Default: synthetic.days in params.yaml."),
    ] = None,
    end_date: Annotated[
        str | None,
        typer.Option(help="Last day of the history (YYYY-MM-DD). Default: yesterday (UTC)."),
    ] = None,
    url: UrlOption = None,
    reset: Annotated[bool, typer.Option(help="Replace the rows already in the source.")] = False,
    if_empty: Annotated[
        bool, typer.Option(help="Do nothing when the source already holds users.")
    ] = False,
) -> None:
    """Fill a contract database with realistic synthetic PrepIQ data (ground truth apart)."""
    from core.database import get_engine
    from core.security import redact_url
    from features.migrate import require_contract, upgrade
    from synthetic.generator import seed_source, source_user_count

    params = load_params()
    synthetic = params.get("synthetic", {})
    students = students if students is not None else int(synthetic.get("students", 2000))
    seed = seed if seed is not None else int(params.get("seed", 42))
    days = days if days is not None else int(synthetic.get("days", 180))
    end = _parse_date(end_date)
    settings = get_settings()
    engine = get_engine(url)
    log = get_logger("prepiq.seed")
    if url is None:
        upgrade(engine)  # the embedded default is ours to create
    if if_empty and not reset:
        require_contract(engine)
        existing = source_user_count(engine)
        if existing:
            typer.echo(f"source already holds {existing} users; not seeding (use --reset)")
            return
    summary = seed_source(
        engine,
        students=students,
        seed=seed,
        days=days,
        end_date=end,
        reset=reset,
        truth_dir=settings.ground_truth_dir,
        progress=lambda done, total: log.info("seeding", students_done=done, students=total),
    )
    log.info(
        "seeded", database=redact_url(str(engine.url)), **summary.rows, seconds=summary.seconds
    )
    total = sum(summary.rows.values())
    typer.echo(
        f"seeded {students} students ({total:,} rows, {summary.window_start}..{summary.window_end}) "
        f"in {summary.seconds:.1f}s; ground truth in {summary.truth_dir}"
    )


def _parse_timestamp(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"expected an ISO timestamp such as 2026-11-20T18:00:00Z, got {value!r}",
            param_hint=f"'{option}'",
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def ingest(
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Point in time of the snapshot (ISO timestamp, UTC if no zone). Default: now."
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option(help="Rebuild from scratch instead of reading only changes.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Snapshot every contract table of the source into data/raw (a Prefect flow)."""
    from pipelines.ingest import ingest_flow

    moment = _parse_timestamp(as_of, "--as-of")
    manifest = ingest_flow(source_url=url, as_of=moment, full=full)
    rows = sum(t.rows for t in manifest.tables.values())
    read = sum(t.rows_read for t in manifest.tables.values())
    modes = sorted({t.mode for t in manifest.tables.values()})
    typer.echo(
        f"snapshot of {manifest.source} as of {manifest.as_of}: {rows:,} rows in "
        f"{len(manifest.tables)} tables ({'/'.join(modes)}, {read:,} read) in {manifest.seconds:.1f}s; "
        f"content hash {manifest.content_hash[:12]}"
    )


@app.command()
def train(
    models: Annotated[
        list[str] | None,
        typer.Option("--models", help="Models to train (repeatable). Default: all four, in order."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials per model. Default: params.yaml.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Tuning processes per study. With PREPIQ_OPTUNA_STORAGE on PostgreSQL the "
            "same command on other machines joins the same studies.",
        ),
    ] = 1,
    students: Annotated[
        int | None,
        typer.Option(min=10, help="Train on a stable sample of at most this many students."),
    ] = None,
    url: UrlOption = None,
    ingest: Annotated[
        bool,
        typer.Option(help="Snapshot the source first; --no-ingest trains on data/raw as it is."),
    ] = True,
) -> None:
    """Ingest through the data gate, build features, tune, evaluate and register the models."""
    from pipelines.train import train_flow
    from training.models import MODELS

    unknown = sorted(set(models or []) - set(MODELS))
    if unknown:
        raise ConfigError(
            f"--models: unknown model {', '.join(unknown)} (known: {', '.join(MODELS)})"
        )
    report = train_flow(
        models=models,
        trials=trials,
        source_url=url,
        ingest=ingest,
        workers=workers,
        students=students,
    )
    _echo_table(
        [
            "model",
            "version",
            "main metric",
            "value",
            "best baseline",
            "uplift",
            "champion",
            "report",
        ],
        [
            [
                r.model,
                r.version,
                r.main_metric,
                f"{r.value:.3f}",
                f"{r.best_baseline} {r.baseline_value:.3f}",
                f"{r.uplift:+.1%}",
                r.champion or "none yet",
                r.report,
            ]
            for r in report.models
        ],
    )
    stages = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in report.stage_seconds.items())
    typer.echo(f"Stages: {stages}.")
    typer.echo("Open the MLflow UI with `prepiq ui` (http://127.0.0.1:5000).")


ModelOption = Annotated[
    str, typer.Option("--model", help="A model (e.g. focus-area), or 'all'.", show_default=False)
]


def _model_keys(model: str) -> list[str]:
    """The models a `--model NAME|all` option names, in training order."""
    from training.models import MODELS

    if model != "all" and model not in MODELS:
        raise ConfigError(f"--model: unknown model {model} (known: all, {', '.join(MODELS)})")
    return list(MODELS) if model == "all" else [model]


def _one_model(model: str) -> str:

    if model == "all":
        raise ConfigError("--model: name one model here, not 'all'")
    return _model_keys(model)[0]


def _snapshot_context() -> TrainingContext:
    """The training context of the current snapshot (data/raw) and params.yaml."""
    from pipelines.scheduled import snapshot_context

    return snapshot_context(get_settings().data_dir)


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option("--model", help="Model to evaluate (e.g. focus-area), or 'all'.")
    ] = "all",
    alias: Annotated[str, typer.Option(help="Registered alias to evaluate.")] = "champion",
    version: Annotated[
        int | None, typer.Option(min=1, help="A registered version instead of the alias.")
    ] = None,
) -> None:
    """Score a registered model on the current snapshot's hold-out next to its baselines;
    the report goes to data/evaluation/MODEL/."""
    from training.models import MODELS
    from training.runs import evaluate_registered

    keys = _model_keys(model)
    ctx = _snapshot_context()
    for key in keys:
        spec = MODELS[key]
        uri = f"models:/{spec.name}/{version}" if version else f"models:/{spec.name}@{alias}"
        out_dir = ctx.data_dir / "evaluation" / key
        _, markdown = evaluate_registered(spec, ctx, uri, out_dir)
        typer.echo(markdown)
        typer.echo(f"report: {out_dir / 'evaluation.json'}")


@app.command()
def reproduce(
    model: Annotated[str, typer.Option("--model", help="The model (e.g. focus-area).")],
    version: Annotated[int, typer.Option(min=1, help="The registered version to reproduce.")],
    into: Annotated[
        Path | None,
        typer.Option(
            help="Scratch folder for the restored snapshot and the report (kept). "
            "Default: a temporary folder, removed afterwards.",
            show_default=False,
        ),
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(
            help="DVC remote to restore from. Default: PREPIQ_DVC_REMOTE_URL, else the "
            "repository's default remote.",
            show_default=False,
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Relative tolerance of each metric.")
    ] = 1e-6,
) -> None:
    """Restore the snapshot a version was trained on (by the DVC hash its run recorded)
    into a scratch folder, evaluate the version on it as training did, and compare with
    the hold-out metrics logged at training. Exit 0: all match; 1: some differ (named);
    2: an error (no such version, the snapshot not in the remote, ...)."""
    key = _one_model(model)  # before the heavy imports: a bad name is answered at once
    from registry.reproduce import reproduce_in_scratch
    from training.models import MODELS

    result = reproduce_in_scratch(
        MODELS[key], version, into, remote_url=remote, tolerance=tolerance
    )
    _echo_table(
        ["metric", "logged", "reproduced", "status"],
        [[c.name, _number(c.logged), _number(c.reproduced), c.status] for c in result.checks],
    )
    typer.echo(
        f"run {result.run_id} (commit {result.trained_commit[:12]}; now "
        f"{result.current_commit[:12]}), snapshot {result.data_version} from {result.remote}"
    )
    if into is not None:
        typer.echo(f"snapshot in {result.snapshot_dir}; report in {into / 'reproduction.json'}")
    if not result.ok:
        typer.echo(f"prepiq: reproduce: {result.summary()}", err=True)
        raise typer.Exit(1)
    typer.echo(result.summary())


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command()
def promote(
    model: ModelOption = "all",
    dry_run: Annotated[
        bool, typer.Option(help="Judge and audit, but move no alias and import nothing.")
    ] = False,
    refresh_holdout: Annotated[
        bool, typer.Option(help="Re-freeze the hold-out from the current snapshot first.")
    ] = False,
) -> None:
    """Judge each challenger against its champion on the frozen hold-out and promote it if
    it passes; each model is judged even when another fails. Exit 0: a champion changed
    (or would, with --dry-run); 3: every champion kept (each challenger kept or refused,
    or nothing to judge); 2: a model could not be judged (a registry, hold-out or lock
    error, named); 1: an internal error on a model. The report is printed and saved to
    data/promotion/MODEL.{json,md}."""
    from pipelines.alerts import alert_if_refused
    from registry.promotion import combined_exit_code
    from registry.promotion import promote as run_promotion
    from training.models import MODELS

    keys = _model_keys(model)
    ctx = _snapshot_context()
    out_dir = ctx.data_dir / "promotion"
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = []
    for key in keys:
        try:
            result = run_promotion(
                MODELS[key], ctx, dry_run=dry_run, refresh_holdout=refresh_holdout
            )
        except Exception as exc:  # one model's error does not stop the others
            code = exc.exit_code if isinstance(exc, PrepIQError) else 1
            kind = "error" if code == 2 else "internal error"
            message = str(exc) if code == 2 else f"{type(exc).__name__}: {exc}"
            get_logger("prepiq.promotion").debug("promotion failed", model=key, exc_info=True)
            typer.echo(f"prepiq: {kind}: {key}: {message}", err=True)
            (out_dir / f"{key}.md").write_text(f"## {key}: {kind.upper()}\n\n{message}\n")
            (out_dir / f"{key}.json").write_text(
                json.dumps({"model": key, "decision": "error", "error": message}, indent=2)
            )
            codes.append(code)
            continue
        markdown = result.markdown()
        typer.echo(markdown)
        alert_if_refused(result)
        (out_dir / f"{key}.md").write_text(markdown)
        summary = {k: v for k, v in result.__dict__.items() if k != "report"}
        summary["report"] = result.report.to_dict() if result.report else None
        (out_dir / f"{key}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        codes.append(result.exit_code)
    typer.echo(f"reports: {out_dir}")
    raise typer.Exit(combined_exit_code(codes))


@app.command()
def rollback(
    model: Annotated[str, typer.Option("--model", help="The model to roll back.")],
) -> None:
    """Make the `previous` version champion again (audited)."""
    from registry.promotion import rollback as run_rollback
    from training.models import MODELS

    result = run_rollback(MODELS[_one_model(model)], _snapshot_context())
    typer.echo(
        f"{result.model}: champion is v{result.champion} again (audit run "
        f"{result.audit_run_id}); serving follows within PREPIQ_SERVING_CHAMPION_POLL_SECONDS"
    )


@app.command()
def status(
    history: Annotated[
        str | None,
        typer.Option("--history", help="Show this model's audit trail instead, newest first."),
    ] = None,
) -> None:
    """Champion and challenger of every model: versions, main metrics, trained at, data
    version, promoted at (or, with --history MODEL, that model's audit trail)."""
    from mlflow import MlflowClient

    from registry import audit
    from training import tracking
    from training.models import MODELS

    uri = tracking.configure()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def when(moment: datetime | None) -> str:
        return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"

    def figure(version: str | None, value: float | None) -> str:
        return f"v{version} ({value:.3f})" if version and value is not None else _opt(version)

    if history is not None:
        key = _one_model(history)
        entries = audit.history(client, MODELS[key].name)
        _echo_table(
            ["when (UTC)", "decision", "from", "to", "actor", "reasons"],
            [
                [
                    when(e.at),
                    e.decision,
                    e.from_version,
                    e.to_version,
                    e.actor,
                    "; ".join(r for r in e.reasons.splitlines() if r.startswith("FAIL"))
                    or (e.reasons.splitlines()[0] if e.reasons else ""),
                ]
                for e in entries
            ],
        )
        if not entries:
            typer.echo(f"no audit records for {MODELS[key].name}")
        return
    _echo_table(
        ["model", "metric", "champion", "challenger", "trained at", "data version", "promoted at"],
        [
            [
                row.model,
                row.main_metric,
                figure(row.champion, row.champion_metric),
                figure(row.challenger, row.challenger_metric),
                when(row.trained_at),
                (row.data_version or "-")[:12],
                when(row.promoted_at),
            ]
            for row in audit.status(client, list(MODELS.values()))
        ],
    )


def _echo_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell (model names and metric labels vary)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _opt(version: str | None) -> str:
    return f"v{version}" if version else "-"


@holdout_app.command("freeze")
def holdout_freeze(model: ModelOption = "all") -> None:
    """Freeze each model's hold-out anew from the current snapshot into data/holdout and
    store it in MLflow: from now on the gate judges on it, on every host."""
    from registry import holdout
    from training import tracking
    from training.models import MODELS

    keys = _model_keys(model)
    ctx = _snapshot_context()
    tracking.configure()
    for key in keys:
        path = holdout.freeze(MODELS[key], ctx)
        frozen = holdout.load(key, ctx.data_dir)
        typer.echo(f"{key}: {path} (sha256 {frozen.sha256[:12]}, as of {frozen.meta['as_of']})")


@holdout_app.command("pull")
def holdout_pull(model: ModelOption = "all") -> None:
    """Put each model's stored hold-out (the one in MLflow) into data/holdout; a model
    with none stored anywhere gets one frozen from the current snapshot."""
    from registry import holdout
    from training import tracking
    from training.models import MODELS

    keys = _model_keys(model)
    ctx = _snapshot_context()
    tracking.configure()
    for key in keys:
        frozen = holdout.ensure(MODELS[key], ctx)
        typer.echo(
            f"{key}: {frozen.path} (sha256 {frozen.sha256[:12]}, as of {frozen.meta['as_of']})"
        )


@app.command()
def validate() -> None:
    """Run the data gate again over the current snapshot (data/raw) and save its report."""
    from features.snapshot import RAW_DIR, read_manifest
    from features.validation import (
        GateSettings,
        enforce,
        report_path,
        validate_snapshot,
        write_report,
    )

    data_dir = get_settings().data_dir
    manifest = read_manifest(data_dir / RAW_DIR)
    if manifest is None:
        raise ConfigError(f"no snapshot in {data_dir / RAW_DIR}; run `prepiq ingest` first")
    report = validate_snapshot(
        data_dir / RAW_DIR,
        as_of=datetime.fromisoformat(manifest.as_of),
        previous_rows=manifest.previous_rows,
        settings=GateSettings.from_params(load_params()),
    )
    path = write_report(report, report_path(data_dir))
    enforce(report)
    typer.echo(f"{report.summary()}; report in {path}")


@app.command()
def features(
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Point in time of the features (ISO timestamp). Default: the snapshot's."
        ),
    ] = None,
) -> None:
    """Build the four models' feature tables from the current snapshot into data/features."""
    from features.snapshot import RAW_DIR, read_manifest
    from features.store import FEATURES_DIR, build_feature_tables

    data_dir = get_settings().data_dir
    if read_manifest(data_dir / RAW_DIR) is None:
        raise ConfigError(f"no snapshot in {data_dir / RAW_DIR}; run `prepiq ingest` first")
    manifest = build_feature_tables(
        data_dir / RAW_DIR, data_dir / FEATURES_DIR, _parse_timestamp(as_of, "--as-of")
    )
    tables = manifest["tables"]
    assert isinstance(tables, dict)
    listing = ", ".join(f"{name} {entry['rows']:,}" for name, entry in tables.items())
    typer.echo(f"feature tables as of {manifest['as_of']} in {data_dir / FEATURES_DIR}: {listing}")


@app.command()
def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the project's tracking store (127.0.0.1 only): experiments,
    runs with their artifacts, and the registered models with their aliases."""
    from core.security import redact_url
    from prepiq.mlflow_ui import require_free_port, run_server, server_command

    settings = get_settings()
    command, env = server_command(settings, port)
    require_free_port(port)
    store = redact_url(env["MLFLOW_BACKEND_STORE_URI"])
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (store {store}); Ctrl+C stops it")
    sys.stdout.flush()
    raise typer.Exit(run_server(command, env))


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve each model's champion, followed in the MLflow registry and fetched into the
    local BentoML store (the PrepIQ app's API; /readyz answers 200 once every required
    model is served)."""

    typer.echo(f"PrepIQ serving on http://{host}:{port} (docs /docs.json); Ctrl+C stops it")
    command = [
        sys.executable, "-m", "bentoml", "serve", "serving.service:PrepIQService",
        "--host", host, "--port", str(port), "--working-dir", str(PROJECT_ROOT),
    ]  # fmt: skip
    sys.stdout.flush()
    # Replace this process, so a supervisor's SIGTERM reaches the server itself (and its
    # prediction log is flushed) instead of orphaning a child.
    os.execve(sys.executable, command, os.environ.copy())


@app.command()
def archive(
    retention_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Archive rows older than this many days. Default: "
            "PREPIQ_PREDICTION_RETENTION_DAYS.",
            show_default=False,
        ),
    ] = None,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per Parquet part file.")] = 50_000,
    url: UrlOption = None,
) -> None:
    """Move old model_predictions rows into Parquet under data/archive (a Prefect flow)."""
    from pipelines.archive import archive_flow

    report = archive_flow(retention_days=retention_days, source_url=url, batch_rows=batch_rows)
    typer.echo(report.summary())


@app.command()
def deploy(
    pool: Annotated[
        str, typer.Option(help="Process work pool the runs go to (created if missing).")
    ] = "prepiq",
    deployment: Annotated[
        list[str] | None,
        typer.Option(
            "--deployment",
            help="Deployment to register (repeatable): nightly, weekly-retune, monitoring, "
            "archive. Default: every one whose flow exists.",
        ),
    ] = None,
) -> None:
    """Register the scheduled deployments (schedules and parameters from params.yaml
    `schedules:`) on the Prefect server at PREFECT_API_URL; a worker then runs them:
    `prefect worker start --pool POOL`."""
    from pipelines.deployments import register

    for registered in register(pool, deployment):
        typer.echo(registered.describe())
    typer.echo(f"work pool {pool!r}: start a worker with `prefect worker start --pool {pool}`")


@app.command()
def monitor(
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=1,
            help="Days of served predictions to check for drift. Default: params.yaml "
            "monitoring.lookback_days.",
            show_default=False,
        ),
    ] = None,
    retrain: Annotated[
        bool | None,
        typer.Option(
            "--retrain/--no-retrain",
            help="Start a training run when a threshold is crossed (--no-retrain: report "
            "only). Default: params.yaml monitoring.retrain.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="How to retrain: auto (the Prefect deployment when the server has it, else "
            "in this process), deployment or in-process. Default: params.yaml.",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Moment to monitor at (ISO timestamp, UTC if no zone). Default: now."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Drift of the served students' features against the training snapshot and live
    quality of the predictions whose outcomes arrived; retrains past a threshold."""
    from pipelines.monitoring import SUMMARY_HEADER, monitoring_flow, summary_rows

    report = monitoring_flow(
        lookback_days=since,
        as_of=_parse_timestamp(as_of, "--as-of"),
        retrain=retrain,
        retrain_mode=mode,
        source_url=url,
    )
    _echo_table(SUMMARY_HEADER, summary_rows(report))
    for reason in report.reasons:
        typer.echo(f"threshold crossed: {reason}")
    if report.retraining:
        typer.echo(f"retraining started: {json.dumps(report.retraining)}")
    elif report.triggered:
        typer.echo("retraining not started (--no-retrain or monitoring.retrain: false)")
    else:
        typer.echo("no threshold crossed: no retraining")
    typer.echo(f"report: MLflow run {report.mlflow_run_id} (experiment prepiq-monitoring)")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage or user error)."""
    try:
        # Without standalone mode, click returns a `typer.Exit` code instead of raising it.
        code = app(args=argv, prog_name="prepiq", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
        return 0
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "prepiq"
        message = " ".join(exc.format_message().split())
        typer.echo(f"{command}: error: {message}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except PrepIQError as exc:
        typer.echo(f"prepiq: error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        # A bug, not a user error: the traceback goes to the log, one line to the user.
        get_logger("prepiq").debug("unhandled error", exc_info=True)
        typer.echo(
            f"prepiq: internal error: {type(exc).__name__}: {exc} "
            "(rerun with PREPIQ_LOG_LEVEL=DEBUG for the traceback)",
            err=True,
        )
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
