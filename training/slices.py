"""The slices the promotion gate compares a challenger with its champion on, for models
whose hold-out rows are (student, topic) pairs: the topic's subject, new vs long-standing
students, low vs high recent activity. The columns are added to the hold-out when it is
built (never model inputs), so a frozen hold-out carries them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core.exceptions import HoldoutError
from features.frames import SourceFrames

SLICE_COLUMNS = ("subject", "days_since_joined", "student_attempts_last_30d")


def with_slice_columns(
    examples: pd.DataFrame, frames: SourceFrames, answers: pd.DataFrame, origin: datetime
) -> pd.DataFrame:
    """The examples with what the promotion gate slices by: the topic's subject (id), the
    student's days since joining and answers over the 30 days up to `origin`."""
    topics = frames["topics"][["id", "subject_id"]].rename(
        columns={"id": "topic_id", "subject_id": "subject"}
    )
    joined = frames["users"].set_index("id")["created_at"]
    moment = pd.Timestamp(origin)
    recent = answers[
        (answers["answered_at"] > moment - pd.Timedelta(days=30))
        & (answers["answered_at"] <= moment)
    ]
    per_student = recent.groupby("user_id").size()
    out = examples.merge(topics, on="topic_id", how="left")
    out["days_since_joined"] = (
        (moment - out["user_id"].map(joined)).dt.total_seconds() / 86400
    ).to_numpy(dtype=float)
    out["student_attempts_last_30d"] = (
        out["user_id"].map(per_student).fillna(0).to_numpy(dtype=float)
    )
    return out


def student_topic_slices(
    holdout: pd.DataFrame, params: dict[str, Any], model: str, key: str
) -> dict[str, np.ndarray]:
    """Row masks of each slice: one per subject, new vs long-standing students (joined
    under `promotion.new_student_days` before the origin), low vs high recent activity
    (answers over the last 30 days below / at least the hold-out students' median)."""
    missing = [c for c in SLICE_COLUMNS if c not in holdout]
    if missing:
        raise HoldoutError(
            f"{model}: the frozen hold-out lacks the slice columns {missing}; re-freeze it "
            f"with `prepiq holdout freeze --model {key}`"
        )
    new_days = float(params.get("promotion", {}).get("new_student_days", 60))
    joined = holdout["days_since_joined"].to_numpy(dtype=float)
    activity = holdout["student_attempts_last_30d"].to_numpy(dtype=float)
    median = float(holdout.drop_duplicates("user_id")["student_attempts_last_30d"].median())
    masks = {
        f"subject {name}": (holdout["subject"] == name).to_numpy()
        for name in sorted(holdout["subject"].dropna().unique())
    }
    return masks | {
        "new students": joined < new_days,
        "long-standing students": joined >= new_days,
        "low recent activity": activity < median,
        "high recent activity": activity >= median,
    }
