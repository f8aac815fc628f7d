"""Progress forecaster: a student's syllabus completion at +30, +60 and +90 days, with an
80% interval, from the student's daily sequence (`features.progress.daily_sequences`).

Examples are (student, origin) pairs: the daily sequence of the `window_days` ending at
the origin is the input; the label is the completion the student had reached at
origin + h, read from the source's `user_progress` (the last recorded value on or before
that day; the app never lowers completion, so carrying it forward is exact). The
generator's ground truth is never a training input; it is a second yardstick.

Splits, by student and by time: the hold-out students are scored at the latest origin
whose +90 day label is observed (as_of - 90 days); training students at rolling origins
every `origin_step_days` before it. With 180 days of history that gives about ten
training origins per student: the history is too short for anything but overlapping
origins, and the overlap is what makes enough examples (consecutive origins of one student
are correlated, so cross-validation keeps every student in one fold).

The model is an LSTM over the daily sequence whose last state, with the per-student facts
and the recent pace, feeds a small head. It forecasts the growth beyond the recent pace
(completion gained per day over the last `slope_days`, measured from a newcomer's first
record, carried forward): the pace is the strongest single signal and the one that
holds at the as-of day, which is later than every training origin; the network learns
the corrections (who slows down, who stops, who is about to finish a syllabus). Quantiles
come from the pinball loss; predictions are sorted over quantiles, made non-decreasing
over horizons and clipped to [completion now, 100]. A training penalty asks the median
to rise when the same days carry more study (see `ForecastModule`).

Baselines, on the same examples: last value; the recent slope carried forward (the
issue's, counting a newcomer's first record as growth); the slope from the first record
(a stronger variant); completion now plus the training students' mean growth at a
similar completion level.

Tuning: Optuna over time-ordered cross-validation grouped by student (fit on the other
folds' earlier origins, validate on the fold's latest origins), pruned epoch by epoch
through Lightning.

The promotion gate (`registry.gate`) compares hold-out slices (first enrolled subject,
new vs long-standing, low vs high recent study; `slice_table`), runs the issue's
behavioural test on the hold-out students (more study, rebuilt from edited
`study_activity` rows, must raise the forecast) and times single-student requests.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from core.config import params_section
from core.exceptions import ConfigError, HoldoutError
from features.frames import SourceFrames, from_snapshot
from features.progress import SEQUENCE_COLUMNS, STATIC_COLUMNS, daily_sequences
from features.progress import TABLES as PROGRESS_TABLES
from training.metrics import forecast_errors
from training.model_spec import Outcome, TrainingContext
from training.splits import first_origin, group_folds, student_split, training_origins

NAME = "prepiq-progress-forecaster"
REQUIREMENTS = ["mlflow", "torch", "lightning", "pandas", "numpy", "cloudpickle"]
COMPLETION = SEQUENCE_COLUMNS.index("completion_percent")
MINUTES = SEQUENCE_COLUMNS.index("study_minutes")
LOGINS = SEQUENCE_COLUMNS.index("logins")
MONITOR = "val_mae"  # logged every epoch; what the pruning callback watches


@dataclass(frozen=True)
class ProgressForecasterParams:
    """The knobs of `params.yaml: progress_forecaster`."""

    horizons_days: tuple[int, ...] = (30, 60, 90)
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    window_days: int = 56
    origin_step_days: int = 7
    first_origin_days: int = 14
    holdout_fraction: float = 0.2
    cv_folds: int = 3
    cv_validation_origins: int = 2
    slope_days: int = 30
    more_study_penalty: float = 1.0
    more_study_margin_points: float = 0.1
    backtest_days_before_as_of: tuple[int, ...] = (150, 120, 90, 60, 30)
    batch_size: int = 256
    torch_threads: int = 1
    trials: int = 6
    search_space: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProgressForecasterParams:
        known = params_section(
            params, "progress_forecaster", cls.__dataclass_fields__, DEFAULT_SPACE
        )
        p = cls(**known)
        if 0.5 not in p.quantiles or len(p.quantiles) < 3:
            raise ConfigError(
                "params.yaml progress_forecaster.quantiles: needs 0.5 (the point forecast) "
                f"between a lower and an upper quantile, got {list(p.quantiles)}"
            )
        return p

    @property
    def median(self) -> int:
        return self.quantiles.index(0.5)

    @property
    def interval_level(self) -> float:
        return max(self.quantiles) - min(self.quantiles)


DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "hidden_size": (16, 48),
    "layers": (1, 2),
    "dropout": (0.0, 0.3),
    "learning_rate": (1e-3, 1e-2),
    "epochs": (8, 24),
}
LOG_SCALE = {"hidden_size", "learning_rate"}


def output_column(quantile: float, horizon: int) -> str:
    """`completion_p10_30d` and the like: the pyfunc's output columns."""
    return f"completion_p{round(quantile * 100):02d}_{horizon}d"


# -- examples ------------------------------------------------------------------------------


@dataclass
class Examples:
    """(student, origin) examples as arrays: the raw daily sequence [n, window, channels]
    in `SEQUENCE_COLUMNS` order, the per-student facts [n, `STATIC_COLUMNS`], and the
    completion reached at each horizon [n, horizons] (NaN where not yet observed). `rows`
    are the builder's rows they came from (one origin's; what a logged model is given)."""

    user_id: np.ndarray
    origin: np.ndarray
    sequence: np.ndarray
    static: np.ndarray
    target: np.ndarray
    rows: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.user_id)

    @property
    def completion(self) -> np.ndarray:
        """Completion on the origin day (the last value of the sequence)."""
        return self.sequence[:, -1, COMPLETION]

    def subset(self, rows: np.ndarray) -> Examples:
        return Examples(
            self.user_id[rows],
            self.origin[rows],
            self.sequence[rows],
            self.static[rows],
            self.target[rows],
            self.rows,
        )

    @classmethod
    def concat(cls, parts: list[Examples]) -> Examples:
        """Examples of several origins (arrays only: the rows stay with each origin)."""

        def stacked(name: str) -> np.ndarray:
            return np.concatenate([getattr(part, name) for part in parts])

        return cls(
            stacked("user_id"),
            stacked("origin"),
            stacked("sequence"),
            stacked("static"),
            stacked("target"),
        )


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


def completion_reached(progress: pd.DataFrame, users: np.ndarray, day: date) -> np.ndarray:
    """Each student's completion on `day`: the last value recorded on or before it (NaN
    when the student has no record by then)."""
    recorded = progress[progress["recorded_on"] <= day]
    last = recorded.sort_values("recorded_on").groupby("user_id")["completion_percent"].last()
    return pd.Series(users).map(last).to_numpy(dtype=float)


def inputs_at(frames: SourceFrames, origin: datetime, p: ProgressForecasterParams) -> Examples:
    """Every student in `frames` at `origin`: the daily sequence up to it, no labels yet."""
    rows = daily_sequences(frames, origin, p.window_days)
    users, sequence, static = sequence_arrays(rows, p.window_days)
    stamp = np.full(len(users), np.datetime64(origin.replace(tzinfo=None), "s"))
    target = np.full((len(users), len(p.horizons_days)), np.nan)
    return Examples(users, stamp, sequence, static, target, rows)


def examples_at(
    frames: SourceFrames, origin: datetime, p: ProgressForecasterParams, limit: date
) -> Examples:
    """Labelled examples at `origin`: the inputs up to the origin, and the completion
    reached at origin + h for the horizons that end by `limit` (the as-of day; later ones
    stay NaN). Students without any record by the first horizon are left out (no label)."""
    examples = inputs_at(frames, origin, p)
    progress = frames["user_progress"]
    for k, h in enumerate(p.horizons_days):
        if (day := origin.date() + timedelta(days=h)) <= limit:
            examples.target[:, k] = completion_reached(progress, examples.user_id, day)
    return examples.subset(np.flatnonzero(~np.isnan(examples.target[:, 0])))


@dataclass
class ForecastData:
    """Training examples (training students, earlier origins), the hold-out (other
    students at `holdout_origin`), the hold-out students' examples at each backtest origin,
    and their sequences at the as-of day (forecasts past the snapshot, for the truth)."""

    train: Examples
    holdout: Examples
    holdout_origin: datetime
    backtest: dict[str, Examples]
    latest: Examples
    holdout_slices: pd.DataFrame | None = None  # `slice_table` of the hold-out students


def make_dataset(
    frames: SourceFrames, as_of: datetime, p: ProgressForecasterParams, seed: int
) -> ForecastData:
    """Split by student and by time (see the module docstring)."""
    limit = as_of.date()
    longest = timedelta(days=max(p.horizons_days))
    holdout_origin = as_of - longest
    training_frames, holdout_frames = student_split(frames, p.holdout_fraction, seed)
    train_origins = training_origins(
        frames,
        p.first_origin_days,
        holdout_origin - timedelta(days=p.origin_step_days),
        p.origin_step_days,
    )
    train = Examples.concat([examples_at(training_frames, t, p, limit) for t in train_origins])
    backtest = {
        f"{moment:%Y-%m-%d}": examples_at(holdout_frames, moment, p, limit)
        for moment in sorted(as_of - timedelta(days=d) for d in p.backtest_days_before_as_of)
        if moment >= first_origin(frames, p.first_origin_days)
    }
    holdout = examples_at(holdout_frames, holdout_origin, p, limit)
    return ForecastData(
        train=train,
        holdout=holdout,
        holdout_origin=holdout_origin,
        backtest=backtest,
        latest=inputs_at(holdout_frames, as_of, p),
        holdout_slices=slice_table(holdout_frames, holdout_origin, holdout.user_id),
    )


# Hold-out columns the promotion gate slices by (never model inputs).
SLICE_COLUMNS = ("subject", "days_since_joined", "study_minutes_last_30d")
RECENT_ACTIVITY_DAYS = 30


def slice_table(frames: SourceFrames, origin: datetime, users: np.ndarray) -> pd.DataFrame:
    """What the promotion gate slices the hold-out students by, one row per student of
    `users` (in that order): the subject the student enrolled in first (earliest
    `user_subjects.enrolled_at` up to `origin`, ties by subject id; NaN without one), days
    since joining at `origin`, and study minutes over the `RECENT_ACTIVITY_DAYS` days
    ending on the origin day."""
    moment = pd.Timestamp(origin)
    enrolled = frames["user_subjects"]
    enrolled = enrolled[enrolled["enrolled_at"] <= moment].sort_values(
        ["user_id", "enrolled_at", "subject_id"]
    )
    first_subject = enrolled.groupby("user_id")["subject_id"].first()
    joined = frames["users"].set_index("id")["created_at"]
    activity = frames["study_activity"]
    day = origin.date()
    recent = activity[
        (activity["activity_date"] > day - timedelta(days=RECENT_ACTIVITY_DAYS))
        & (activity["activity_date"] <= day)
    ]
    minutes = recent.groupby("user_id")["study_minutes"].sum()
    index = pd.Index(users, name="user_id")
    return pd.DataFrame(
        {
            "subject": first_subject.reindex(index).to_numpy(dtype=float),
            "days_since_joined": (
                (moment - joined.reindex(index)).dt.total_seconds() / 86400
            ).to_numpy(dtype=float),
            "study_minutes_last_30d": minutes.reindex(index).fillna(0.0).to_numpy(dtype=float),
        },
        index=index,
    )


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
    def fit(cls, examples: Examples) -> InputScaler:
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


def pinball_loss(predicted: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Mean quantile (pinball) loss: predicted [n, horizons, quantiles], target [n, horizons]."""
    error = target.unsqueeze(-1) - predicted
    return torch.maximum(quantiles * error, (quantiles - 1) * error).mean()


class ForecastModule(pl.LightningModule):
    """Trains a `ForecastNet` on growth targets with the pinball loss, plus a penalty
    whenever the same days with more study would get a median forecast less than
    `margin` higher (the net never lowers it; this asks for a rise of a useful size).
    Logs the median's MAE (percentage points) on the validation set every epoch."""

    quantile_levels: Tensor

    def __init__(
        self,
        net: ForecastNet,
        p: ProgressForecasterParams,
        lr: float,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("quantile_levels", torch.tensor(p.quantiles, dtype=torch.float32))
        self.median = p.median
        self.penalty = p.more_study_penalty
        self.margin = p.more_study_margin_points / 100.0
        self.lr = lr

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        daily, facts, study, growth, more_daily, more_facts, more_studied = batch
        predicted = self.net(daily, facts, study)
        loss = pinball_loss(predicted, growth, self.quantile_levels)
        more = self.net(more_daily, more_facts, more_studied)
        rise = more[:, :, self.median] - predicted[:, :, self.median]
        return loss + self.penalty * torch.relu(self.margin - rise).mean()

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        daily, facts, study, growth = batch
        error = (self.net(daily, facts, study)[:, :, self.median] - growth).abs()
        self.log(MONITOR, 100 * error.mean(), on_epoch=True, batch_size=len(growth))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


@dataclass(frozen=True)
class Hyper:
    """One trial's hyperparameters."""

    hidden_size: int
    layers: int
    dropout: float
    learning_rate: float
    epochs: int


def suggest(trial: Any, p: ProgressForecasterParams) -> Hyper:
    """An Optuna trial's hyperparameters (ranges from `params.yaml`)."""
    space = DEFAULT_SPACE | {k: tuple(v) for k, v in p.search_space.items()}

    def integer(name: str) -> int:
        low, high = space[name]
        return int(trial.suggest_int(name, int(low), int(high), log=name in LOG_SCALE))

    def real(name: str) -> float:
        low, high = space[name]
        return float(trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE))

    return Hyper(
        hidden_size=integer("hidden_size"),
        layers=integer("layers"),
        dropout=real("dropout"),
        learning_rate=real("learning_rate"),
        epochs=integer("epochs"),
    )


def more_study(sequence: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The same days with more study: minutes times `factor` (one per student) and one
    more login on every active day; completion as it was."""
    more = sequence.copy()
    active = sequence[:, :, MINUTES] > 0
    more[:, :, MINUTES] *= np.where(active, factor[:, None], 1.0)
    more[:, :, LOGINS] += active
    return more


def _loader(
    scaler: InputScaler,
    examples: Examples,
    p: ProgressForecasterParams,
    batch_size: int,
    seed: int,
    train: bool,
) -> DataLoader[Any]:
    """Batches of scaled inputs and the growth beyond the recent pace (hundreds of points);
    for training, also the inputs with more study (the shape penalty's counterfactual)."""
    daily, facts, study = scaler.tensors(examples.sequence, examples.static)
    pace = slope_growth(examples.sequence, p.horizons_days, p.slope_days, from_first_record=True)
    growth = torch.as_tensor(
        (examples.target - examples.completion[:, None] - pace) / 100.0, dtype=torch.float32
    )
    tensors = [daily, facts, study, growth]
    if train:
        factor = np.random.default_rng(seed).uniform(1.2, 2.0, len(examples))
        tensors += scaler.tensors(more_study(examples.sequence, factor), examples.static)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=batch_size,
        shuffle=batch_size < len(examples),
        generator=torch.Generator().manual_seed(seed),
    )


def fit(
    examples: Examples,
    hyper: Hyper,
    p: ProgressForecasterParams,
    seed: int,
    validation: Examples | None = None,
    callbacks: list[Any] | None = None,
) -> Forecaster:
    """Train the network on `examples` (scaler fitted on them too). With `validation`, the
    median's MAE on it is logged every epoch for `callbacks` (pruning)."""
    torch.set_num_threads(p.torch_threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    scaler = InputScaler.fit(examples)
    daily, facts, study = model_inputs(examples.sequence[:1], examples.static[:1])
    net = ForecastNet(
        daily.shape[2],
        facts.shape[1],
        study.shape[1],
        hyper.hidden_size,
        hyper.layers,
        hyper.dropout,
        len(p.horizons_days),
        len(p.quantiles),
    )
    module = ForecastModule(net, p, hyper.learning_rate)
    # Lightning's notices (no GPU, few loader workers) are noise for a CPU-only fit.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=hyper.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks or [],
    )
    scored = None
    if validation is not None:
        scored = _loader(scaler, validation, p, len(validation), seed, train=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        trainer.fit(module, _loader(scaler, examples, p, p.batch_size, seed, train=True), scored)
    return Forecaster(net.eval(), scaler, p.horizons_days, p.quantiles, p.slope_days)


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


# -- baselines -----------------------------------------------------------------------------


def last_value(examples: Examples, horizons: tuple[int, ...]) -> np.ndarray:
    """Baseline: completion stays where it is."""
    return np.repeat(examples.completion[:, None], len(horizons), axis=1)


def recent_slope(
    examples: Examples, horizons: tuple[int, ...], days: int, from_first_record: bool = False
) -> np.ndarray:
    """Baseline: the daily growth over the last `days` carried forward, clipped to 0-100
    (the issue's baseline; `from_first_record` is the stronger variant that does not
    count a newcomer's first record as growth)."""
    return examples.completion[:, None] + slope_growth(
        examples.sequence, horizons, days, from_first_record
    )


@dataclass
class CohortGrowth:
    """Baseline: completion now plus the training students' mean growth over h days at a
    similar completion level (tenths of the syllabus; the overall mean when a level is
    empty)."""

    growth: np.ndarray  # [levels, horizons]

    LEVELS = 10

    @classmethod
    def level(cls, completion: np.ndarray) -> np.ndarray:
        return np.clip((completion // (100 / cls.LEVELS)).astype(int), 0, cls.LEVELS - 1)

    @classmethod
    def fit(cls, train: Examples) -> CohortGrowth:
        growth = train.target - train.completion[:, None]
        level = cls.level(train.completion)
        overall = np.nanmean(growth, axis=0)
        table = np.array(
            [
                np.nanmean(growth[level == k], axis=0) if (level == k).any() else overall
                for k in range(cls.LEVELS)
            ]
        )
        return cls(table)

    def predict(self, examples: Examples) -> np.ndarray:
        now = examples.completion[:, None]
        return np.clip(now + self.growth[self.level(examples.completion)], 0, 100)


def forecast_quantiles(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    examples: Examples,
    p: ProgressForecasterParams,
) -> np.ndarray:
    """A logged model's forecast [n, horizons, quantiles] for `examples`, from the builder
    rows it is given in serving."""
    assert examples.rows is not None, "examples without their builder rows"
    out = predict(examples.rows).set_index("user_id").reindex(examples.user_id)
    columns = [output_column(q, h) for h in p.horizons_days for q in p.quantiles]
    return out[columns].to_numpy(dtype=float).reshape(len(examples), len(p.horizons_days), -1)


def baseline_forecasts(
    cohort: CohortGrowth, examples: Examples, p: ProgressForecasterParams
) -> dict[str, np.ndarray]:
    """Point forecasts [n, horizons] of every baseline."""
    return {
        "baseline_last_value": last_value(examples, p.horizons_days),
        "baseline_recent_slope": recent_slope(examples, p.horizons_days, p.slope_days),
        "baseline_slope_since_first_record": recent_slope(
            examples, p.horizons_days, p.slope_days, from_first_record=True
        ),
        "baseline_cohort_growth": cohort.predict(examples),
    }


def horizon_errors(
    truth: np.ndarray,
    point: np.ndarray,
    horizons: tuple[int, ...],
    interval: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """MAE per horizon and their mean (plus interval coverage and width per horizon when
    an interval is given), over the examples whose label at that horizon is observed."""
    metrics: dict[str, float] = {}
    for k, h in enumerate(horizons):
        seen = ~np.isnan(truth[:, k])
        if not seen.any():
            continue
        bounds = None if interval is None else (interval[0][seen, k], interval[1][seen, k])
        for name, value in forecast_errors(truth[seen, k], point[seen, k], bounds).items():
            metrics[f"{name}_{h}d"] = value
    maes = [v for k, v in metrics.items() if k.startswith("mae_")]
    metrics["mae_mean"] = float(np.mean(maes)) if maes else float("nan")
    metrics["n"] = float(len(truth))
    return metrics


def model_errors(
    quantiles: np.ndarray, truth: np.ndarray, p: ProgressForecasterParams
) -> dict[str, float]:
    """The model's metrics against `truth` [n, horizons]: its median's MAE, with the
    coverage and width of its interval (the outer quantiles)."""
    return horizon_errors(
        truth,
        quantiles[:, :, p.median],
        p.horizons_days,
        (quantiles[:, :, 0], quantiles[:, :, -1]),
    )


def score(
    quantiles: np.ndarray,
    cohort: CohortGrowth,
    examples: Examples,
    truth: np.ndarray,
    p: ProgressForecasterParams,
) -> dict[str, dict[str, float]]:
    """Metrics of the model (its median, with its interval) and of each baseline against
    `truth` [n, horizons]."""
    report = {"model": model_errors(quantiles, truth, p)}
    for name, point in baseline_forecasts(cohort, examples, p).items():
        report[name] = horizon_errors(truth, point, p.horizons_days)
    return report


def truth_completion(
    truth_dir: Path, users: np.ndarray, horizons: tuple[int, ...]
) -> np.ndarray | None:
    """The generator's true completion of `users` at each horizon past the snapshot's end
    (None without a ground truth: on a real Supabase)."""
    path = truth_dir / "students.parquet"
    if not path.exists():
        return None
    students = pd.read_parquet(path).set_index("user_id")
    columns = [f"completion_plus_{h}d" for h in horizons]
    if not set(columns) <= set(students.columns):
        return None
    return students.reindex(users)[columns].to_numpy(dtype=float)


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


# -- the spec ------------------------------------------------------------------------------


def time_ordered_folds(
    train: Examples, p: ProgressForecasterParams, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds grouped by student and ordered in time: each fold validates
    on its students at the latest `cv_validation_origins` origins and fits on the other
    students at strictly earlier origins."""
    latest = np.unique(train.origin)[-p.cv_validation_origins :]
    late = np.isin(train.origin, latest)
    early = train.origin < latest.min()
    folds = []
    for fit_rows, score_rows in group_folds(train.user_id, p.cv_folds, seed):
        folds.append((fit_rows[early[fit_rows]], score_rows[late[score_rows]]))
    return folds


# The behavioural probe (`ProgressForecasterSpec.behaviour_checks`).
MORE_STUDY_FACTOR = 1.5  # minutes of every active day of the window times this
RISE_POINTS = 0.01  # a median higher by more than this has risen (percentage points)
FALL_TOLERANCE_POINTS = 0.5  # the shape is learnt: a dip this small is tolerated
MAX_FALL_SHARE = 0.05  # of the probed students, at most this share may fall by more


def with_more_study(
    frames: SourceFrames, origin: datetime, window_days: int, factor: float = MORE_STUDY_FACTOR
) -> SourceFrames:
    """The frames with more study in the `window_days` days ending on the origin day:
    `study_activity` rows with minutes get `factor` times the minutes and one more login
    (the counterfactual of the behavioural checks; other days and tables as they were)."""
    activity = frames["study_activity"].copy()
    day = origin.date()
    more = (
        (activity["activity_date"] > day - timedelta(days=window_days))
        & (activity["activity_date"] <= day)
        & (activity["study_minutes"] > 0)
    )
    activity["study_minutes"] = activity["study_minutes"].astype(float)
    activity.loc[more, "study_minutes"] *= factor
    activity.loc[more, "logins"] = activity.loc[more, "logins"] + 1
    return SourceFrames(frames.tables | {"study_activity": activity})


class ProgressForecasterSpec:
    """The progress forecaster for the training run (`training.model_spec.ModelSpec`)."""

    name = NAME
    key = "progress-forecaster"
    direction: Literal["minimize", "maximize"] = "minimize"
    main_metric = "mae_mean"
    higher_is_better = False

    def default_trials(self, ctx: TrainingContext) -> int:
        return ProgressForecasterParams.from_params(ctx.params).trials

    def prepare(self, ctx: TrainingContext, frames: SourceFrames) -> ForecastData:
        p = ProgressForecasterParams.from_params(ctx.params)
        return make_dataset(frames, ctx.as_of, p, ctx.seed)

    def objective(self, ctx: TrainingContext, data: ForecastData) -> Callable[[Any], float]:
        """Mean MAE over horizons of the median forecast, over time-ordered folds grouped
        by student; the first fold's epochs feed the pruner."""
        from optuna_integration import PyTorchLightningPruningCallback  # type: ignore[import-untyped]

        p = ProgressForecasterParams.from_params(ctx.params)
        folds = time_ordered_folds(data.train, p, ctx.seed)

        def objective(trial: Any) -> float:
            hyper = suggest(trial, p)
            maes = []
            for k, (fit_rows, score_rows) in enumerate(folds):
                validation = data.train.subset(score_rows)
                # Epoch-level reports from one fold only: the pruner compares trials
                # step by step, and later folds would repeat the same steps.
                callbacks = [PyTorchLightningPruningCallback(trial, MONITOR)] if k == 0 else []
                forecaster = fit(
                    data.train.subset(fit_rows), hyper, p, ctx.seed, validation, callbacks
                )
                median = forecaster.predict(validation.sequence, validation.static)[:, :, p.median]
                maes.append(horizon_errors(validation.target, median, p.horizons_days)["mae_mean"])
            return float(np.mean(maes))

        return objective

    def evaluate(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[dict[str, Any], str]:
        """A model's report next to the baselines: on the hold-out, in a rolling-origin
        backtest of the hold-out students, and (synthetic data) against the generator's
        true completion after the snapshot; and its Markdown tables."""
        from training import reports

        p = ProgressForecasterParams.from_params(ctx.params)
        cohort = CohortGrowth.fit(data.train)
        holdout = data.holdout
        report: dict[str, Any] = score(
            forecast_quantiles(predict, holdout, p), cohort, holdout, holdout.target, p
        )
        report["backtest"] = {
            origin: {
                name: metrics["mae_mean"]
                for name, metrics in score(
                    forecast_quantiles(predict, examples, p), cohort, examples, examples.target, p
                ).items()
            }
            | {"n": float(len(examples))}
            for origin, examples in data.backtest.items()
        }
        latest = data.latest
        truth = None
        if ctx.truth_dir is not None:
            truth = truth_completion(ctx.truth_dir, latest.user_id, p.horizons_days)
        if truth is not None:
            report["against_truth"] = score(
                forecast_quantiles(predict, latest, p), cohort, latest, truth, p
            )

        methods = ["model", *(k for k in report if k.startswith("baseline_"))]
        columns = [
            *(f"mae_{h}d" for h in p.horizons_days),
            "mae_mean",
            *(f"coverage_{h}d" for h in p.horizons_days),
            "n",
        ]
        markdown = reports.markdown_table(
            f"{NAME}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d}; "
            f"MAE in percentage points, coverage of the {p.interval_level:.0%} interval)",
            {k: report[k] for k in methods},
            columns,
        )
        markdown += "\n" + reports.markdown_table(
            "rolling-origin backtest of the hold-out students (mean MAE over the horizons "
            "observed by the as-of day)",
            report["backtest"],
            [*methods, "n"],
        )
        if "against_truth" in report:
            markdown += "\n" + reports.markdown_table(
                "against the generator's true completion after the snapshot (from the as-of day)",
                report["against_truth"],
                columns,
            )
        return report, markdown

    def slice_reports(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, dict[str, float]]:
        """Hold-out metrics per slice the promotion gate compares (each with `n`): new vs
        long-standing students (joined under `promotion.new_student_days` before the
        origin vs at least), low vs high recent activity (study minutes over the 30 days
        up to the origin below vs at least the hold-out students' median), and subject.

        A completion forecast is per student over all the student's enrolled subjects
        (`user_progress` is one number for the whole syllabus), so there is no subject
        per example; a student is put in the slice of the subject first enrolled in
        (`slice_table`), the syllabus that has been under way longest. That still
        catches a challenger that gets worse for, say, the students who started with
        Biology; students of several subjects count once, under their first."""
        slices = getattr(data, "holdout_slices", None)
        if slices is None or not set(SLICE_COLUMNS) <= set(slices.columns):
            raise HoldoutError(
                f"{NAME}: the frozen hold-out lacks the slice columns {list(SLICE_COLUMNS)}; "
                f"re-freeze it with `prepiq holdout freeze --model {self.key}`"
            )
        p = ProgressForecasterParams.from_params(ctx.params)
        holdout = data.holdout
        quantiles = forecast_quantiles(predict, holdout, p)
        per_student = slices.reindex(holdout.user_id)
        new_days = float(ctx.params.get("promotion", {}).get("new_student_days", 60))
        joined = per_student["days_since_joined"].to_numpy(dtype=float)
        activity = per_student["study_minutes_last_30d"].to_numpy(dtype=float)
        median = float(np.median(activity))
        subject = per_student["subject"].to_numpy(dtype=float)
        masks = {
            f"subject {int(name)}": subject == name
            for name in sorted(np.unique(subject[~np.isnan(subject)]))
        }
        masks |= {
            "new students": joined < new_days,
            "long-standing students": joined >= new_days,
            "low recent activity": activity < median,
            "high recent activity": activity >= median,
        }
        return {
            name: model_errors(quantiles[rows], holdout.target[rows], p)
            for name, rows in masks.items()
            if rows.any()
        }

    def behaviour_checks(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        predict: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> dict[str, tuple[bool, str]]:
        """The behavioural test of the training issue, "more study raises the forecast",
        on the hold-out students at the hold-out origin: every active day of the input
        window gets `MORE_STUDY_FACTOR` times the minutes and one more login, in the
        snapshot's `study_activity` rows; both inputs are rebuilt by
        `features.progress.daily_sequences` (the builder serving uses), so streaks, tests
        and completion stay as they were. Judged on the median at the longest horizon, for
        the students who studied in the window and whose median is below 100 (room to
        rise): it rises (by over `RISE_POINTS`) for most of them, and falls (by over
        `FALL_TOLERANCE_POINTS`) for at most `MAX_FALL_SHARE` of them."""
        p = ProgressForecasterParams.from_params(ctx.params)
        origin = data.holdout_origin
        frames = from_snapshot(ctx.snapshot_dir, PROGRESS_TABLES).for_users(
            data.holdout.user_id.tolist()
        )
        column = output_column(0.5, max(p.horizons_days))
        base_rows = daily_sequences(frames, origin, p.window_days)
        more_rows = daily_sequences(
            with_more_study(frames, origin, p.window_days), origin, p.window_days
        )
        base = predict(base_rows).set_index("user_id")[column]
        raised = predict(more_rows).set_index("user_id")[column].reindex(base.index)
        studied = base_rows.groupby("user_id")["study_minutes"].sum().reindex(base.index) > 0
        probed = (studied & (base < 100.0 - RISE_POINTS)).to_numpy()
        change = (raised - base).to_numpy(dtype=float)[probed]
        name_rise = "more study raises the forecast"
        name_fall = "more study does not lower the forecast"
        if not len(change):
            why = "no hold-out student studied in the window with a forecast below 100"
            return {name_rise: (False, why), name_fall: (False, why)}
        rise_share = float((change > RISE_POINTS).mean())
        fall_share = float((change < -FALL_TOLERANCE_POINTS).mean())
        where = (
            f"of {len(change)} hold-out students, the +{max(p.horizons_days)} d median with "
            f"{MORE_STUDY_FACTOR:g}x minutes and one more login per active day"
        )
        return {
            name_rise: (
                rise_share > 0.5,
                f"rises for {rise_share:.0%} {where} (mean change "
                f"{float(change.mean()):+.2f} points; needs over 50%)",
            ),
            name_fall: (
                fall_share <= MAX_FALL_SHARE,
                f"falls by over {FALL_TOLERANCE_POINTS:g} points for {fall_share:.0%} {where} "
                f"(lowest change {float(change.min()):+.2f}; at most {MAX_FALL_SHARE:.0%} "
                "allowed)",
            ),
        }

    def request_samples(self, data: ForecastData, count: int) -> list[pd.DataFrame]:
        """Single-student requests as serving sends them: each of `count` hold-out
        students' `daily_sequences` rows at the hold-out origin (the gate times `predict`
        on them)."""
        rows = data.holdout.rows
        assert rows is not None, "hold-out examples without their builder rows"
        students = sorted(set(data.holdout.user_id.tolist()))[:count]
        return [rows[rows["user_id"] == s].reset_index(drop=True) for s in students]

    def finish(
        self,
        ctx: TrainingContext,
        data: ForecastData,
        best_params: dict[str, Any],
        cv_score: float,
    ) -> Outcome:
        """Refit the winner on every training example and evaluate it, as logged, next
        to the baselines."""
        from optuna.trial import FixedTrial

        from training import tracking

        p = ProgressForecasterParams.from_params(ctx.params)
        forecaster = fit(data.train, suggest(FixedTrial(best_params), p), p, ctx.seed)
        model = ProgressForecasterPyfunc(forecaster, p.window_days)
        report, markdown = self.evaluate(ctx, data, lambda frame: model.predict(None, frame))
        holdout = data.holdout
        methods = ["model", *(k for k in report if k.startswith("baseline_"))]

        def plots(folder: Path) -> object:
            quantiles = forecaster.predict(holdout.sequence, holdout.static)
            return forecast_plots(folder, report, methods, p, quantiles, holdout.target)

        rows = data.latest.rows
        assert rows is not None
        return Outcome(
            python_model=model,
            input_example=rows[rows["user_id"] == rows["user_id"].iloc[0]].reset_index(drop=True),
            requirements=tracking.pinned_requirements(REQUIREMENTS),
            report=report,
            markdown=markdown,
            main_metric=self.main_metric,
            main_label="hold-out mean MAE over the horizons (completion %)",
            higher_is_better=self.higher_is_better,
            params={
                "holdout_origin": f"{data.holdout_origin:%Y-%m-%d}",
                "training_examples": len(data.train),
                "training_origins": len(np.unique(data.train.origin)),
            },
            plots=plots,
        )


SPEC = ProgressForecasterSpec()


def forecast_plots(
    folder: Path,
    report: dict[str, Any],
    methods: list[str],
    p: ProgressForecasterParams,
    quantiles: np.ndarray,
    target: np.ndarray,
) -> list[Path]:
    """MAE per horizon (model and baselines), the backtest's MAE per origin, and the
    model's forecast against the completion reached at the longest horizon."""
    import matplotlib.pyplot as plt

    from training import reports  # noqa: F401  (sets the Agg backend before any figure)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(methods)
    backtest = report["backtest"]
    for i, name in enumerate(methods):
        maes = [report[name].get(f"mae_{h}d", np.nan) for h in p.horizons_days]
        axes[0].bar(np.arange(len(maes)) + i * width, maes, width, label=name)
        axes[1].plot([backtest[o][name] for o in backtest], marker="o", label=name)
    axes[0].set_xticks(np.arange(len(p.horizons_days)) + 0.4, [f"+{h} d" for h in p.horizons_days])
    axes[0].set(ylabel="MAE (completion %)", title="Hold-out MAE per horizon")
    axes[0].legend(fontsize=7)
    axes[1].set_xticks(np.arange(len(backtest)), list(backtest), rotation=30)
    axes[1].set(xlabel="origin", ylabel="mean MAE", title="Rolling-origin backtest")
    last = len(p.horizons_days) - 1
    axes[2].errorbar(
        target[:, last],
        quantiles[:, last, p.median],
        yerr=[
            quantiles[:, last, p.median] - quantiles[:, last, 0],
            quantiles[:, last, -1] - quantiles[:, last, p.median],
        ],
        fmt=".",
        alpha=0.3,
        markersize=3,
    )
    axes[2].plot([0, 100], [0, 100], linestyle=":", color="grey")
    axes[2].set(
        xlabel="completion reached (%)",
        ylabel="forecast median and interval (%)",
        title=f"+{p.horizons_days[last]} days, hold-out",
    )
    figure.tight_layout()
    path = folder / "forecasts.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]
