"""One student's built model input as the materialised store (`serving.feature_store`)
keeps it and a request (`serving.online_features`) reads it: its own module, so the store
can use the request path and the request path can read the store's entries."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Entry:
    """One student's built input: rows start:stop of a batch frame, what it was built
    from, and the model outputs computed from it so far (`outputs`: filled by the
    request path, keyed by model and request options; the same input through the same
    model gives the same output, so a repeat request for an unchanged student reuses
    it, and a rebuilt entry starts empty)."""

    stamp: tuple[Any, ...]
    day: date
    catalogue_at: float
    built_at: float
    frame: pd.DataFrame
    start: int
    stop: int
    outputs: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

    def rows(self) -> pd.DataFrame:
        """A copy of the student's rows (a caller's edits never reach the store). By
        `take`, not a sliced view then copied: under copy-on-write every view adds a weak
        reference to the batch frame's blocks, and those pile up (one per request) until
        pandas prunes them, for the garbage collector to walk."""
        found = self.frame.take(np.arange(self.start, self.stop))
        found.index = pd.RangeIndex(len(found))
        return found


class EntryLookup(Protocol):
    """What a request asks of the materialised store: an entry still current for the
    student's rows, and the counts of model outputs memoised and reused."""

    outputs_computed: int
    outputs_reused: int

    def lookup(
        self,
        kind: str,
        extra: Hashable,
        user_id: str,
        stamp: tuple[Any, ...],
        day: date,
        catalogue_at: float,
    ) -> Entry | None: ...
