"""Progress forecaster inputs: a daily sequence per student up to a point in time.

Each student gets `window_days` rows ending on the as-of day: study minutes, logins,
streak, mean test score of the day (and whether there was one), and syllabus completion
carried forward from the last recorded value; plus a few per-student facts (days to the
exam, days since joining, topics in the enrolled syllabi).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from features.frames import SourceFrames

TABLES = ("users", "user_subjects", "tests", "study_activity", "user_progress")
SEQUENCE_COLUMNS = (
    "study_minutes",
    "logins",
    "streak_days",
    "test_score",
    "had_test",
    "completion_percent",
)
STATIC_COLUMNS = ("days_to_exam", "days_since_join", "topics_total")
NO_EXAM_DAYS = 365.0  # days_to_exam of a student with no exam date set


def daily_sequences(frames: SourceFrames, as_of: datetime, window_days: int = 90) -> pd.DataFrame:
    """One row per student and day of the window ending at `as_of` (day_index 0 = as-of day)."""
    frames = frames.as_of(as_of)
    users = frames["users"][["id", "created_at", "exam_date"]].rename(columns={"id": "user_id"})
    end = pd.Timestamp(as_of.date())
    days = pd.date_range(end - pd.Timedelta(days=window_days - 1), end, freq="D").astype(
        "datetime64[ns]"
    )
    grid = pd.MultiIndex.from_product(
        [users["user_id"].sort_values(), days], names=["user_id", "day"]
    )

    activity = frames["study_activity"].assign(
        day=lambda f: pd.to_datetime(f["activity_date"]).astype("datetime64[ns]")
    )
    activity = activity.set_index(["user_id", "day"])[["study_minutes", "logins", "streak_days"]]

    tests = frames["tests"]
    scores = (
        tests.assign(
            day=tests["completed_at"].dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")
        )
        .groupby(["user_id", "day"])["score_percent"]
        .mean()
        .rename("test_score")
    )
    progress = frames["user_progress"].assign(day=lambda f: pd.to_datetime(f["recorded_on"]))
    progress = progress.sort_values(["user_id", "day"])

    table = pd.DataFrame(index=grid).join(activity).join(scores)
    table["had_test"] = table["test_score"].notna().astype(float)
    table[["study_minutes", "logins", "streak_days", "test_score"]] = (
        table[["study_minutes", "logins", "streak_days", "test_score"]].fillna(0.0).astype(float)
    )
    table = table.reset_index()
    table["day"] = table["day"].astype("datetime64[ns]")
    progress["day"] = progress["day"].astype("datetime64[ns]")
    # Completion carried forward from the last recording, including ones before the window.
    table = pd.merge_asof(
        table.sort_values("day"),
        progress[["user_id", "day", "completion_percent", "topics_total"]].sort_values("day"),
        on="day",
        by="user_id",
        direction="backward",
    )
    table["completion_percent"] = table["completion_percent"].fillna(0.0)

    enrolled = frames["user_subjects"].groupby("user_id").size().rename("subjects")
    static = users.set_index("user_id").join(enrolled)
    as_of_day = pd.Timestamp(as_of.date())
    static["days_to_exam"] = (pd.to_datetime(static["exam_date"]) - as_of_day).dt.days.astype(float)
    static["days_since_join"] = (
        as_of_day - static["created_at"].dt.tz_localize(None).dt.normalize()
    ).dt.days.astype(float)
    table = table.drop(columns=["topics_total"]).merge(
        static[["days_to_exam", "days_since_join"]], left_on="user_id", right_index=True, how="left"
    )
    topics_total = progress.groupby("user_id")["topics_total"].last()
    table["topics_total"] = table["user_id"].map(topics_total).fillna(0.0).astype(float)
    table["days_to_exam"] = table["days_to_exam"].fillna(NO_EXAM_DAYS)
    table["day_index"] = (table["day"] - as_of_day).dt.days
    table["day"] = table["day"].dt.date
    columns = ["user_id", "day", "day_index", *SEQUENCE_COLUMNS, *STATIC_COLUMNS]
    return table[columns].sort_values(["user_id", "day_index"]).reset_index(drop=True)


def sequence_from_days(
    days: pd.DataFrame, static: dict[str, float], window_days: int, user_id: str = "-"
) -> pd.DataFrame:
    """`daily_sequences` rows for one student from days a caller gives (columns `day`,
    study_minutes, logins, streak_days, test_score (NaN: no test), completion_percent)
    and the STATIC_COLUMNS values: the window ends at the latest given day. A missing
    day counts as no activity and no test with completion carried forward, days before
    the first given one as no activity and no completion, as `daily_sequences` counts
    the days before a student's first row."""
    end = pd.Timestamp(max(days["day"]))
    window = pd.date_range(end - pd.Timedelta(days=window_days - 1), end, freq="D")
    given = days.assign(day=pd.to_datetime(days["day"])).set_index("day").sort_index()
    table = pd.DataFrame(index=window)
    activity = ["study_minutes", "logins", "streak_days"]
    table[activity] = given[activity].reindex(window).fillna(0.0).astype(float)
    scores = given["test_score"].reindex(window).astype(float)
    table["had_test"] = scores.notna().astype(float)
    table["test_score"] = scores.fillna(0.0)
    # Completion before the window still carries into it.
    completion = given["completion_percent"].astype(float)
    carried = completion.reindex(completion.index.union(window)).ffill().reindex(window)
    table["completion_percent"] = carried.fillna(0.0)
    for name in STATIC_COLUMNS:
        table[name] = float(static[name])
    table["user_id"] = user_id
    table["day_index"] = (window - end).days
    table["day"] = window.date
    columns = ["user_id", "day", "day_index", *SEQUENCE_COLUMNS, *STATIC_COLUMNS]
    return table[columns].reset_index(drop=True)
