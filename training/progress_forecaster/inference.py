"""What serving loads of the progress forecaster: its card and the logged pyfunc with the
network it runs (`ForecastNet`), the input scaler and the forecast's post-processing.

The model is an LSTM over the daily sequence whose last state, with the per-student facts
and the recent pace, feeds a small head. It forecasts the growth beyond the recent pace
(completion gained per day over the last `slope_days`, measured from a newcomer's first
record, carried forward): the pace is the strongest single signal and the one that
holds at the as-of day, which is later than every training origin; the network learns
the corrections (who slows down, who stops, who is about to finish a syllabus). Quantiles
come from the pinball loss; predictions are sorted over quantiles, made non-decreasing
over horizons and clipped to [completion now, 100]. A training penalty asks the median
to rise when the same days carry more study (see
`training.progress_forecaster.estimator.ForecastModule`).

Imports no training code (no Lightning, no Optuna): serving imports this module only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel
from torch import Tensor, nn

from features.progress import SEQUENCE_COLUMNS, STATIC_COLUMNS
from training.card import ModelCard

CARD = ModelCard(
    key="progress-forecaster",
    name="prepiq-progress-forecaster",
    main_metric="mae_mean",
    higher_is_better=False,
)
COMPLETION = SEQUENCE_COLUMNS.index("completion_percent")
MINUTES = SEQUENCE_COLUMNS.index("study_minutes")
LOGINS = SEQUENCE_COLUMNS.index("logins")


def output_column(quantile: float, horizon: int) -> str:
    """`completion_p10_30d` and the like: the pyfunc's output columns."""
    return f"completion_p{round(quantile * 100):02d}_{horizon}d"


def sequence_arrays(rows: pd.DataFrame, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long rows of `daily_sequences` (one or many students) -> user ids, sequences
    [students, window, channels] of the last `window` days, and per-student facts.
    Days missing from the rows (a shorter window than the model's) count as no activity,
    with the completion of the nearest day given."""
    # Columns to numpy first, then the row mask: filtering the frame itself copies every
    # column (strings included), which was most of a one-student request's cost.
    day_index = rows["day_index"].to_numpy().astype(int)
    keep = (day_index <= 0) & (day_index > -window)

    def columns(names: tuple[str, ...]) -> np.ndarray:
        return np.column_stack([rows[c].to_numpy(dtype=float)[keep] for c in names])

    user_ids = rows["user_id"].to_numpy().astype(str)[keep]
    users, student = np.unique(user_ids, return_inverse=True)
    position = day_index[keep] + window - 1
    sequence = np.zeros((len(users), window, len(SEQUENCE_COLUMNS)))
    sequence[student, position] = columns(SEQUENCE_COLUMNS)
    present = np.zeros((len(users), window), dtype=bool)
    present[student, position] = True
    if not present.all():
        completion = pd.DataFrame(np.where(present, sequence[:, :, COMPLETION], np.nan))
        sequence[:, :, COMPLETION] = completion.ffill(axis=1).bfill(axis=1).fillna(0.0).to_numpy()
    static = np.zeros((len(users), len(STATIC_COLUMNS)))
    static[student] = columns(STATIC_COLUMNS)
    return users, sequence, static


def slope_growth(
    sequence: np.ndarray, horizons: tuple[int, ...], days: int, from_first_record: bool
) -> np.ndarray:
    """Growth [n, horizons] if the daily growth of the last `days` carried on, up to 100%.
    A student's first record jumps from nothing to what was known before joining; with
    `from_first_record` a newcomer's pace is measured from that record, not from zero."""
    days = min(days, sequence.shape[1] - 1)
    recent = sequence[:, -1 - days :, COMPLETION]
    now = recent[:, -1]
    first = np.zeros(len(recent), dtype=int)
    if from_first_record:
        first = np.where((recent > 0).any(axis=1), (recent > 0).argmax(axis=1), days)
    slope = (now - recent[np.arange(len(recent)), first]) / np.maximum(days - first, 1)
    return np.clip(slope[:, None] * np.array(horizons), 0, 100 - now[:, None])


# -- the network ---------------------------------------------------------------------------


RECENT_DAYS = (7, 14, 28)  # spans of the recent-pace facts


Inputs = tuple[np.ndarray, np.ndarray, np.ndarray]
# The daily channels that measure study: the network sees them only through its
# monotone study term (`ForecastNet`), never through the LSTM or the head.
STUDY_CHANNELS = (MINUTES, LOGINS)
STUDY_WEIGHT_START = -4.0  # softplus(-4) = 0.018


def model_inputs(sequence: np.ndarray, static: np.ndarray) -> Inputs:
    """The network's unscaled inputs.
    - Daily: the builder's channels but the study ones (minutes, logins), plus each day's
      completion gain (growth is what is forecast).
    - Facts: the per-student columns, with days since joining capped at the window
      (beyond it, tenure only grows with the origin, and the forecast origin is always
      later than any training origin), completion now, and completion gained over the
      last 7/14/28 days.
    - Study: over the last 7/14/28 days, the share of active days, mean minutes and mean
      logins; each grows with more study on the same days or on more days."""
    completion = sequence[:, :, COMPLETION]
    minutes, logins = sequence[:, :, MINUTES], sequence[:, :, LOGINS]
    window = sequence.shape[1]
    gain = np.diff(completion, axis=1, prepend=completion[:, :1])
    daily = np.concatenate([np.delete(sequence, STUDY_CHANNELS, axis=2), gain[:, :, None]], axis=2)
    static = static.copy()
    static[:, STATIC_COLUMNS.index("days_since_join")] = np.minimum(
        static[:, STATIC_COLUMNS.index("days_since_join")], window
    )
    spans = [min(d, window - 1) for d in RECENT_DAYS]
    facts = np.column_stack(
        [static, completion[:, -1], *(completion[:, -1] - completion[:, -1 - d] for d in spans)]
    )
    study = np.column_stack(
        [
            *((minutes[:, -d:] > 0).mean(axis=1) for d in spans),
            *(minutes[:, -d:].mean(axis=1) for d in spans),
            *(logins[:, -d:].mean(axis=1) for d in spans),
        ]
    )
    return daily, facts, study


def _standardiser(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (never zero) of each column of `values` [rows, columns]."""
    return values.mean(axis=0), np.maximum(values.std(axis=0), 1e-6)


class SequenceInputs(Protocol):
    """What a scaler is fitted on: daily sequences and per-student facts (the training
    `training.progress_forecaster.data.Examples`)."""

    @property
    def sequence(self) -> np.ndarray: ...

    @property
    def static(self) -> np.ndarray: ...


@dataclass(frozen=True)
class InputScaler:
    """Standardises the network's inputs with the training examples' means and spreads
    (a positive scale: the study inputs stay ordered as they were)."""

    daily_mean: np.ndarray
    daily_scale: np.ndarray
    facts_mean: np.ndarray
    facts_scale: np.ndarray
    study_mean: np.ndarray
    study_scale: np.ndarray

    @classmethod
    def fit(cls, examples: SequenceInputs) -> InputScaler:
        daily, facts, study = model_inputs(examples.sequence, examples.static)
        return cls(
            *_standardiser(daily.reshape(-1, daily.shape[2])),
            *_standardiser(facts),
            *_standardiser(study),
        )

    def tensors(self, sequence: np.ndarray, static: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        daily, facts, study = model_inputs(sequence, static)
        scaled = (
            (daily - self.daily_mean) / self.daily_scale,
            (facts - self.facts_mean) / self.facts_scale,
            (study - self.study_mean) / self.study_scale,
        )
        daily_t, facts_t, study_t = (torch.as_tensor(x, dtype=torch.float32) for x in scaled)
        return daily_t, facts_t, study_t


class ForecastNet(nn.Module):
    """LSTM over the daily channels; its last state and the facts feed a head that gives
    the growth (in hundreds of percentage points) per horizon and quantile. Study enters
    only through a term added to every quantile of a horizon: the study inputs weighted by
    positive weights, times a positive gain that the context (state and facts) sets. For
    a given student's other inputs the forecast therefore never falls when study rises:
    by construction, not by what training happened to learn (the data alone cannot teach
    it: study and completion move together in every example)."""

    def __init__(
        self,
        daily_channels: int,
        facts: int,
        study: int,
        hidden_size: int,
        layers: int,
        dropout: float,
        horizons: int,
        quantiles: int,
    ) -> None:
        super().__init__()
        self.horizons, self.quantiles = horizons, quantiles
        self.lstm = nn.LSTM(
            daily_channels,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Sequential(
            nn.Linear(hidden_size + facts, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, horizons * quantiles),
        )
        # Both through softplus (> 0). Started small and context-free: a growth target is
        # a few hundredths, and nine standardised inputs at full weight would swamp it.
        self.study_weight = nn.Parameter(torch.full((horizons, study), STUDY_WEIGHT_START))
        self.study_gain = nn.Linear(hidden_size + facts, horizons)
        nn.init.zeros_(self.study_gain.weight)
        nn.init.zeros_(self.study_gain.bias)

    def forward(self, daily: Tensor, facts: Tensor, study: Tensor) -> Tensor:
        states, _ = self.lstm(daily)
        context = torch.cat([states[:, -1], facts], dim=1)
        out: Tensor = self.head(context).view(-1, self.horizons, self.quantiles)
        effect = nn.functional.softplus(self.study_gain(context)) * (
            study @ nn.functional.softplus(self.study_weight).T
        )
        return out + effect[:, :, None]


@dataclass
class Forecaster:
    """A fitted network with its input scaler: completion quantiles per horizon."""

    net: ForecastNet
    scaler: InputScaler
    horizons: tuple[int, ...]
    quantiles: tuple[float, ...]
    slope_days: int

    def predict(self, sequence: np.ndarray, static: np.ndarray) -> np.ndarray:
        """Completion [n, horizons, quantiles]: sorted over quantiles, non-decreasing over
        horizons, within [completion now, 100] (completion never falls in the app)."""
        with torch.inference_mode():
            beyond = self.net(*self.scaler.tensors(sequence, static)).numpy() * 100.0
        pace = slope_growth(sequence, self.horizons, self.slope_days, from_first_record=True)
        growth = beyond + pace[:, :, None]
        growth = np.maximum.accumulate(np.sort(growth, axis=2), axis=1)
        now = sequence[:, -1, COMPLETION][:, None, None]
        return np.clip(now + growth, now, 100.0)


# -- the logged model ----------------------------------------------------------------------


class ProgressForecasterPyfunc(PythonModel):
    """What serving loads: the network, its input scaler and the window it reads. Input:
    long rows exactly as `features.progress.daily_sequences` returns them (one or many
    students, at least `window_days` days each for full accuracy); output: one row per
    student with today's completion and `completion_p{q}_{h}d` per quantile and horizon."""

    def __init__(self, forecaster: Forecaster, window_days: int) -> None:
        self.forecaster = forecaster
        self.window_days = window_days

    def load_context(self, context: Any) -> None:
        # One thread: a single student's forecast is tiny and serving runs other models.
        torch.set_num_threads(1)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        users, sequence, static = sequence_arrays(model_input, self.window_days)
        quantiles = self.forecaster.predict(sequence, static)
        out: dict[str, Any] = {"user_id": users, "completion_now": sequence[:, -1, COMPLETION]}
        for k, h in enumerate(self.forecaster.horizons):
            for j, q in enumerate(self.forecaster.quantiles):
                out[output_column(q, h)] = quantiles[:, k, j]
        return pd.DataFrame(out)
