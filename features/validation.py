"""The data gate: one Great Expectations suite per contract table, kept as code.

Each suite checks schema and types, not-null keys, uniqueness, value ranges, allowed
sets, referential integrity against the parent tables of the same snapshot, freshness
(the newest row is not older than a limit) and volume against the previous snapshot (a
table may not shrink by more than a set fraction). A failure raises DataValidationError
whose message names table, column, expectation and the share of failing rows; the full
result is written as a JSON report.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.exceptions import DataValidationError
from features.extract import TableSpec, table_specs

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

E = gx.expectations

# Value ranges and allowed sets the app guarantees (the contract's CHECKs, and a few
# plausibility limits the database cannot express).
RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("topics", "syllabus_weight"): (0.0, 1.0),
    ("questions", "difficulty"): (1, 5),
    ("questions", "marks"): (1, 100),
    ("tests", "score_percent"): (0.0, 100.0),
    ("tests", "question_count"): (1, 500),
    ("test_answers", "time_taken_seconds"): (0.0, 3 * 3600),
    ("study_activity", "study_minutes"): (0, 1440),
    ("study_activity", "logins"): (0, 1000),
    ("study_activity", "streak_days"): (0, 100_000),
    ("user_progress", "completion_percent"): (0.0, 100.0),
    ("topic_performance", "accuracy"): (0.0, 1.0),
    ("topic_performance", "attempts"): (1, None),
    ("question_ratings", "difficulty_rating"): (1, 5),
    ("user_preferences", "daily_goal_minutes"): (1, 1440),
    ("model_predictions", "latency_ms"): (0.0, None),
    ("past_papers", "exam_year"): (1950, 2100),
}
ALLOWED: dict[tuple[str, str], list[str]] = {
    ("questions", "correct_option"): ["A", "B", "C", "D"],
    ("test_answers", "selected_option"): ["A", "B", "C", "D"],
    ("tests", "kind"): ["topic_quiz", "mock_paper"],
    ("user_preferences", "preferred_difficulty"): ["easy", "medium", "hard"],
}
# Composite natural keys besides the primary key.
UNIQUE_TOGETHER: dict[str, list[list[str]]] = {
    "topics": [["subject_id", "name"]],
    "past_papers": [["subject_id", "exam_year", "paper_number"]],
    "questions": [["paper_id", "question_number"]],
    "study_activity": [["user_id", "activity_date"]],
    "user_progress": [["user_id", "recorded_on"]],
    "topic_performance": [["user_id", "topic_id"]],
    "question_ratings": [["user_id", "question_id"]],
}
# The column that says how recent a table's activity is, for the freshness check.
FRESHNESS: dict[str, str] = {
    "test_answers": "answered_at",
    "tests": "completed_at",
    "study_activity": "activity_date",
    "user_progress": "recorded_on",
}
# Tables a healthy PrepIQ source never has empty.
MUST_HAVE_ROWS = (
    "users",
    "subjects",
    "topics",
    "past_papers",
    "questions",
    "tests",
    "test_answers",
    "study_activity",
    "user_progress",
)


@dataclass(frozen=True)
class GateSettings:
    """The gate's thresholds, from `params.yaml` (`validation:`)."""

    max_staleness_days: float = 7.0
    max_shrink_fraction: float = 0.10

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GateSettings:
        section = params.get("validation", {})
        return cls(
            max_staleness_days=float(section.get("max_staleness_days", cls.max_staleness_days)),
            max_shrink_fraction=float(section.get("max_shrink_fraction", cls.max_shrink_fraction)),
        )


@dataclass
class Failure:
    """One failed expectation, in the words of the summary."""

    table: str
    column: str | None
    expectation: str
    failing_share: float | None
    observed: Any = None
    failing_rows: int | None = None

    def describe(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        if self.failing_share is not None:
            digits = 2 if self.failing_share >= 0.0001 or self.failing_share == 0 else 5
            share = f"{self.failing_share:.{digits}%}"
            rows = f"{self.failing_rows:,} rows, " if self.failing_rows is not None else ""
            what = f"{rows}{share} of rows fail"
        else:
            what = f"observed {self.observed}"
        return f"{where}: {self.expectation} ({what})"


@dataclass
class GateReport:
    """The result of the gate over a snapshot."""

    success: bool
    checked_at: str
    as_of: str
    failures: list[Failure] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.success:
            return f"data gate passed: {len(self.tables)} tables, every expectation met"
        lines = "; ".join(f.describe() for f in self.failures[:12])
        more = f" (and {len(self.failures) - 12} more)" if len(self.failures) > 12 else ""
        return f"data gate failed on {len(self.failures)} expectations: {lines}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "checked_at": self.checked_at,
            "as_of": self.as_of,
            "summary": self.summary(),
            "failures": [f.__dict__ | {"message": f.describe()} for f in self.failures],
            "tables": self.tables,
        }


def _ge_type(arrow: pa.DataType, has_nulls: bool) -> str:
    """The type Great Expectations reports for a contract column after `to_pandas()`."""
    if pa.types.is_integer(arrow):
        # pandas turns an integer column with nulls into floats.
        return "float64" if has_nulls else f"int{arrow.bit_width}"
    if pa.types.is_floating(arrow):
        return "float64"
    if pa.types.is_boolean(arrow):
        return "bool"
    if pa.types.is_timestamp(arrow):
        return "Timestamp"
    if pa.types.is_date32(arrow):
        return "date"
    return "str"


def suite_for(
    spec: TableSpec,
    frame: pd.DataFrame,
    *,
    as_of: datetime,
    previous_rows: int | None,
    settings: GateSettings,
) -> Any:
    """The expectation suite of one table (`frame` carries its reference flags)."""
    table = spec.table
    suite = gx.ExpectationSuite(name=spec.name)
    suite.add_expectation(
        E.ExpectTableColumnsToMatchSet(
            column_set=[*spec.columns, *(f for f in _reference_flags(spec) if f in frame)],
            exact_match=True,
        )
    )
    for arrow_field in spec.schema:
        if arrow_field.name in frame:
            suite.add_expectation(
                E.ExpectColumnValuesToBeOfType(
                    column=arrow_field.name,
                    type_=_ge_type(arrow_field.type, bool(frame[arrow_field.name].isna().any())),
                )
            )
    for column in table.columns:
        if not column.nullable:
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=column.name))
    keys = spec.keys
    if len(keys) == 1:
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column=keys[0]))
    else:
        suite.add_expectation(E.ExpectCompoundColumnsToBeUnique(column_list=keys))
    for unique in UNIQUE_TOGETHER.get(spec.name, []):
        # As the database's UNIQUE does: a row with a null in the key (a question not
        # from a paper) clashes with nothing.
        suite.add_expectation(
            E.ExpectCompoundColumnsToBeUnique(
                column_list=unique, ignore_row_if="any_value_is_missing"
            )
        )
    for (name, column_name), (low, high) in RANGES.items():
        if name == spec.name:
            suite.add_expectation(
                E.ExpectColumnValuesToBeBetween(column=column_name, min_value=low, max_value=high)
            )
    for (name, column_name), allowed in ALLOWED.items():
        if name == spec.name:
            suite.add_expectation(
                E.ExpectColumnValuesToBeInSet(column=column_name, value_set=allowed)
            )
    # Referential integrity: every foreign key points at a row of this snapshot. The
    # lookup is done here (a vectorised isin) and the gate checks its outcome, because
    # Great Expectations copies a value set into every metric it computes.
    for flag in _reference_flags(spec):
        if flag in frame:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]))
    if spec.name in MUST_HAVE_ROWS:
        suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    if previous_rows:
        floor = math.ceil(previous_rows * (1 - settings.max_shrink_fraction))
        suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=floor))
    fresh_column = FRESHNESS.get(spec.name)
    if fresh_column and len(frame):
        oldest_allowed = as_of - timedelta(days=settings.max_staleness_days)
        value: Any = oldest_allowed
        if pa.types.is_date32(spec.schema.field(fresh_column).type):
            value = oldest_allowed.date()
        suite.add_expectation(E.ExpectColumnMaxToBeBetween(column=fresh_column, min_value=value))
    return suite


REFERENCE_MARK = "__references__"


def _reference_flags(spec: TableSpec) -> list[str]:
    """Names of the derived columns that say whether each foreign key finds its parent."""
    return [
        f"{column.name}{REFERENCE_MARK}{fk.column.table.name}.{fk.column.name}"
        for column in spec.table.columns
        for fk in column.foreign_keys
    ]


def add_reference_flags(
    spec: TableSpec, frame: pd.DataFrame, parents: dict[str, pd.Series]
) -> pd.DataFrame:
    """Add one boolean column per foreign key: True when the key is null or its parent row
    is in the snapshot."""
    flags = {}
    for flag in _reference_flags(spec):
        column, parent = flag.split(REFERENCE_MARK)
        if parent in parents and column in frame:
            values = frame[column]
            flags[flag] = values.isna() | values.isin(parents[parent])
    return frame.assign(**flags) if flags else frame


def _failures(table: str, result: Any) -> Iterator[Failure]:
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = config.kwargs
        share = item.result.get("unexpected_percent")
        column = kwargs.get("column") or (
            ",".join(kwargs["column_list"]) if "column_list" in kwargs else None
        )
        expectation = config.type
        if column and REFERENCE_MARK in column:
            column, parent = column.split(REFERENCE_MARK)
            expectation = f"references {parent} ({config.type})"
        observed = item.result.get("observed_value")
        if item.exception_info and item.exception_info.get("raised_exception"):
            observed = f"error: {item.exception_info.get('exception_message')}"
        yield Failure(
            table=table,
            column=column,
            expectation=expectation,
            failing_share=None if share is None else round(share / 100, 8),
            failing_rows=item.result.get("unexpected_count"),
            observed=observed
            if observed is None or isinstance(observed, int | float | str | list)
            else str(observed),
        )


def _context() -> Any:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def validate_snapshot(
    snapshot_dir: Path,
    *,
    as_of: datetime,
    previous_rows: dict[str, int] | None,
    settings: GateSettings,
) -> GateReport:
    """Run every table's suite over the snapshot in `snapshot_dir`."""
    context = _context()
    source = context.data_sources.add_pandas(name="snapshot")
    report = GateReport(
        success=True, checked_at=datetime.now(as_of.tzinfo).isoformat(), as_of=as_of.isoformat()
    )
    specs = table_specs()
    # Keys that children reference, collected as parents are read (parents come first).
    referenced = {
        (fk.column.table.name, fk.column.name)
        for s in specs
        for c in s.table.columns
        for fk in c.foreign_keys
    }
    parents: dict[str, pd.Series] = {}
    for spec in specs:
        path = snapshot_dir / f"{spec.name}.parquet"
        if not path.exists():
            report.failures.append(Failure(spec.name, None, "table file present", None, "missing"))
            continue
        frame = pq.read_table(path).to_pandas()
        for table_name, column_name in referenced:
            if table_name == spec.name and column_name in frame:
                parents[f"{table_name}.{column_name}"] = (
                    frame[column_name].dropna().drop_duplicates()
                )
        frame = add_reference_flags(spec, frame, parents)
        suite = suite_for(
            spec,
            frame,
            as_of=as_of,
            previous_rows=(previous_rows or {}).get(spec.name),
            settings=settings,
        )
        batch_definition = source.add_dataframe_asset(
            name=spec.name
        ).add_batch_definition_whole_dataframe("all")
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
        failures = list(_failures(spec.name, result))
        report.failures.extend(failures)
        report.tables[spec.name] = {
            "rows": len(frame),
            "expectations": len(result.results),
            "failed": len(failures),
        }
        del frame
    report.success = not report.failures
    return report


def report_path(data_dir: Path) -> Path:
    """Where the gate's JSON report of the latest snapshot is kept."""
    return data_dir / "validation" / "report.json"


def write_report(report: GateReport, path: Path) -> Path:
    """Save the gate's full result as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return path


def enforce(report: GateReport) -> None:
    """Stop here when the gate failed."""
    if not report.success:
        raise DataValidationError(report.summary())
