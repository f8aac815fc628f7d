"""Progress forecaster inference: the pyfunc forecasts from the builder's rows, more
study raises the forecast (and the network never lowers it, by construction), the recent
pace reads a newcomer's first record right, importing the module loads no training code,
and a version pickled by the flat module's path still loads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import training.progress_forecaster
from features.frames import SourceFrames
from features.progress import SEQUENCE_COLUMNS, daily_sequences
from tests.import_probe import forbidden_among, loaded_by
from tests.training.progress_forecaster.conftest import AS_OF, Trained
from training.progress_forecaster import inference
from training.progress_forecaster.data import ForecastData
from training.progress_forecaster.inference import (
    COMPLETION,
    ForecastNet,
    output_column,
    slope_growth,
)


def test_slope_from_the_first_record_ignores_a_newcomers_jump() -> None:
    # 11 days: nothing recorded, then a first record at 20% (known before joining) and
    # one point a day after it.
    completion = np.array([0, 0, 0, 0, 0, 20, 21, 22, 23, 24, 25], dtype=float)
    sequence = np.zeros((1, len(completion), len(SEQUENCE_COLUMNS)))
    sequence[0, :, COMPLETION] = completion
    assert slope_growth(sequence, (10,), 10, from_first_record=True)[0, 0] == pytest.approx(10)
    assert slope_growth(sequence, (10,), 10, from_first_record=False)[0, 0] == pytest.approx(25)
    sequence[0, :, COMPLETION] = 99.0  # growth stops at 100
    sequence[0, 0, COMPLETION] = 89.0
    assert slope_growth(sequence, (30,), 10, from_first_record=False)[0, 0] == pytest.approx(1)


def test_pyfunc_forecasts_from_builder_output(
    trained: Trained, frames: SourceFrames, dataset: ForecastData
) -> None:
    students = sorted(dataset.latest.user_id)[:3]
    rows = daily_sequences(frames.for_users(students), AS_OF)  # the builder's default window
    out = trained.outcome.python_model.predict(None, rows)
    assert list(out["user_id"]) == students
    columns = [c for c in out.columns if c.startswith("completion_p")]
    assert columns == [output_column(q, h) for h in (30, 60) for q in (0.1, 0.5, 0.9)]
    forecast = out[columns].to_numpy().reshape(len(out), 2, 3)
    now = out["completion_now"].to_numpy()[:, None, None]
    assert (np.diff(forecast, axis=2) >= 0).all()  # quantiles in order
    assert (np.diff(forecast, axis=1) >= 0).all()  # never lower further ahead
    assert ((forecast >= now) & (forecast <= 100)).all()
    # One student alone gets the same forecast as among others.
    alone = trained.outcome.python_model.predict(None, rows[rows["user_id"] == students[1]])
    np.testing.assert_allclose(alone[columns].to_numpy()[0], out[columns].to_numpy()[1])


def test_more_study_raises_the_forecast(trained: Trained, dataset: ForecastData) -> None:
    """Behaviour: the same days with 50% more minutes and one more login on each active
    day never lower the median at the longest horizon (built into the network: see the
    next test), and raise it for most students (the size of the rise is learnt, asked for
    by a training penalty)."""
    rows = dataset.latest.rows
    assert rows is not None
    more = rows.copy()
    active = more["study_minutes"] > 0
    more.loc[active, "study_minutes"] *= 1.5
    more.loc[active, "logins"] += 1
    model = trained.outcome.python_model
    column = output_column(0.5, 60)
    base, raised = model.predict(None, rows)[column], model.predict(None, more)[column]
    studying = rows.groupby("user_id")["study_minutes"].sum().sort_index().to_numpy() > 0
    change = (raised - base).to_numpy()[studying]
    assert (change >= -1e-4).all()  # float32 rounding, in percentage points
    assert (change > 0.01).mean() > 0.5


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    more=st.lists(st.floats(0.0, 3.0), min_size=9, max_size=9),
)
def test_the_network_never_lowers_a_forecast_for_more_study(seed: int, more: list[float]) -> None:
    """By construction, whatever the weights: raising any study input (the standardised
    active share, minutes and logins) never lowers any output of any horizon or quantile,
    and the forecast's post-processing (sort, running maximum, clip) keeps that order."""
    torch.manual_seed(seed)
    net = ForecastNet(5, 7, 9, hidden_size=8, layers=1, dropout=0.0, horizons=2, quantiles=3)
    with torch.no_grad():  # weights far from their start, of either sign
        for parameter in net.parameters():
            parameter.normal_(0.0, 2.0)
    daily, facts, study = torch.randn(4, 10, 5), torch.randn(4, 7), torch.randn(4, 9)
    with torch.inference_mode():
        before = net.eval()(daily, facts, study)
        after = net(daily, facts, study + torch.tensor(more))
    assert (after - before >= -1e-5).all()

    def ordered(growth: torch.Tensor) -> np.ndarray:  # as `Forecaster.predict` orders it
        return np.maximum.accumulate(np.sort(growth.numpy(), axis=2), axis=1)

    assert (ordered(after) - ordered(before) >= -1e-5).all()


def test_importing_inference_loads_no_training_code() -> None:
    """In a fresh interpreter (this one has loaded everything): serving's import of the
    module stays off Lightning, Optuna and the training modules."""
    loaded = loaded_by("training.progress_forecaster.inference")
    assert forbidden_among(loaded, "training.progress_forecaster") == []


def test_a_version_pickled_by_the_flat_module_path_still_loads(trained: Trained) -> None:
    """Versions registered before the split name their classes
    `training.progress_forecaster.<Name>`: the package forwards exactly those names."""
    for name in ("ProgressForecasterPyfunc", "Forecaster", "ForecastNet", "InputScaler"):
        old = pickle.loads(f"ctraining.progress_forecaster\n{name}\n.".encode())
        assert old is getattr(inference, name)
    with pytest.raises(AttributeError):
        training.progress_forecaster.make_dataset  # noqa: B018  (not forwarded)
    # The trained model pickled with its classes under the old module path loads whole.
    blob = pickle.dumps(trained.outcome.python_model, protocol=0)
    moved = blob.replace(
        b"ctraining.progress_forecaster.inference\n", b"ctraining.progress_forecaster\n"
    )
    assert moved.count(b"ctraining.progress_forecaster\n") == 4
    model = pickle.loads(moved)
    rows = trained.outcome.input_example
    np.testing.assert_array_equal(
        model.predict(None, rows).drop(columns="user_id").to_numpy(),
        trained.outcome.python_model.predict(None, rows).drop(columns="user_id").to_numpy(),
    )
