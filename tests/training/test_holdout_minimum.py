"""A hold-out below the model's `min_holdout` stops the run with a message naming the
model, the size and the knobs to turn; at the minimum it goes on. (Focus area: the
cheapest dataset to build; every model's count is checked in its own data tests.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.exceptions import HoldoutTooSmallError
from features.frames import SourceFrames
from tests.conftest import END_DATE
from tests.training.focus_area.conftest import small_params
from training.focus_area.spec import SPEC
from training.model_spec import TrainingContext, load_frames

AS_OF = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 23, 0, tzinfo=UTC)


def context(snapshot: Path, min_holdout: int) -> TrainingContext:
    params: dict[str, Any] = small_params()
    params["focus_area"] = params["focus_area"] | {"min_holdout": min_holdout}
    return TrainingContext(
        snapshot_dir=snapshot, data_dir=snapshot.parent, as_of=AS_OF, params=params, seed=42
    )


@pytest.fixture(scope="module")
def frames(clean_snapshot: Path) -> SourceFrames:
    return load_frames(context(clean_snapshot, 0))


def test_a_hold_out_below_the_minimum_stops_naming_model_size_and_knobs(
    clean_snapshot: Path, frames: SourceFrames
) -> None:
    size = SPEC.holdout_size(SPEC.build(context(clean_snapshot, 0), frames))
    assert size.count > 0

    with pytest.raises(HoldoutTooSmallError) as stopped:
        SPEC.prepare(context(clean_snapshot, size.count + 1), frames)
    message = str(stopped.value)
    assert message.startswith(f"focus-area: the hold-out has {size.count} labelled")
    assert f"focus_area.min_holdout = {size.count + 1} in params.yaml" in message
    for knob in ("holdout_fraction", "label_window_days", "min_label_answers"):
        assert f"focus_area.{knob}" in message

    data = SPEC.prepare(context(clean_snapshot, size.count), frames)
    assert len(data.holdout) == size.count
