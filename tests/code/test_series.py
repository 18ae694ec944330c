"""Series: chronological splits, windows built in Ray Data without leakage, baselines, model."""

import numpy as np
import pytest
import torch

from lamina.config.schema import (
    ExperimentConfig,
    ForecasterConfig,
    SeriesDataConfig,
    SplitConfig,
    TrainConfig,
    WindowsConfig,
)
from lamina.data.series_table import (
    read_series_split,
    split_chronological,
    write_series_split,
)
from lamina.errors import DataError
from lamina.evaluation.baselines.series import regression_metrics, series_baselines
from lamina.features.series import SeriesScaler, preprocess_series_splits, read_series_features
from lamina.models.activations import ACTIVATIONS
from lamina.models.forecaster import RNNForecaster


def test_split_is_chronological_disjoint_and_complete():
    parts = split_chronological(200, val_fraction=0.1, test_fraction=0.2, window=12)
    train, val, test = parts["train"], parts["val"], parts["test"]
    joined = np.concatenate([train, val, test])
    # Every position after the first window is a target exactly once, in time order.
    assert np.array_equal(joined, np.arange(12, 200))
    assert train[-1] < val[0] and val[-1] < test[0]
    assert len(val) == 20 and len(test) == 40 and test[-1] == 199


@pytest.mark.parametrize(
    ("num_values", "window"), [(60, 52), (10, 2), (3, 1)], ids=["window", "tiny", "no-val"]
)
def test_too_short_series_is_a_clear_error(num_values, window):
    with pytest.raises(DataError, match=f"series too short for the window: {num_values} values"):
        split_chronological(num_values, 0.1, 0.2, window=window)


def _series_config(tmp_path, window: int, horizon: int) -> ExperimentConfig:
    return ExperimentConfig(
        name="series-test",
        data=SeriesDataConfig(path=str(tmp_path / "series.csv")),
        split=SplitConfig(val_fraction=0.2, test_fraction=0.2),
        preprocess=WindowsConfig(window=window, horizon=horizon),
        model=ForecasterConfig(),
        train=TrainConfig(epochs=1),
    )


@pytest.fixture
def series_parts(tmp_path):
    """A rising series cut 30/10/10: a scaler fitted on more than train would show it."""
    values = np.arange(50, dtype=np.float64) ** 1.5
    times = np.array([f"t{i:03d}" for i in range(50)])
    folder = tmp_path / "splits"
    folder.mkdir()
    for split, part in {"train": slice(0, 30), "val": slice(30, 40), "test": slice(40, 50)}.items():
        write_series_split(folder / f"{split}.parquet", times[part], values[part])
    return folder, values


def test_split_parquet_round_trips(series_parts):
    folder, values = series_parts
    times, test_values = read_series_split(folder / "test.parquet")
    assert times.tolist() == [f"t{i:03d}" for i in range(40, 50)]
    assert np.array_equal(test_values, values[40:])


@pytest.mark.parametrize("horizon", [1, 3])
def test_windows_are_scaled_on_train_and_never_contain_their_target(
    local_ray, series_parts, tmp_path, horizon
):
    folder, values = series_parts
    window = 4
    features = tmp_path / "features"
    scaler = preprocess_series_splits(_series_config(tmp_path, window, horizon), folder, features)

    assert scaler.mean == pytest.approx(values[:30].mean(), rel=1e-12)
    assert scaler.std == pytest.approx(values[:30].std(), rel=1e-9)
    assert (scaler.window, scaler.horizon) == (window, horizon)
    scaled = (values - values[:30].mean()) / values[:30].std()

    expected_targets = {
        "train": np.arange(window, 30 - horizon + 1),
        "val": np.arange(30, 40 - horizon + 1),
        "test": np.arange(40, 50 - horizon + 1),
    }
    for split, targets in expected_targets.items():
        windows, target_values, target_index = read_series_features(features / split)
        assert np.array_equal(target_index, targets), split
        assert windows.shape == (len(targets), window, 1) and windows.dtype == np.float32
        assert target_values.shape == (len(targets), horizon)
        for row, t in enumerate(target_index):
            np.testing.assert_allclose(windows[row, :, 0], scaled[t - window : t], rtol=1e-6)
            np.testing.assert_allclose(target_values[row], scaled[t : t + horizon], rtol=1e-6)
            # The window ends strictly before its first target.
            assert not np.isin(scaled[t : t + horizon].astype(np.float32), windows[row, :, 0]).any()

    # With one-step targets, the test rows' targets are exactly the test part.
    if horizon == 1:
        _, test_targets, _ = read_series_features(features / "test")
        np.testing.assert_allclose(scaler.inverse_transform(test_targets[:, 0]), values[40:])


def test_scaler_round_trips_as_json_and_inverts(tmp_path):
    scaler = SeriesScaler(mean=340.5, std=12.25, window=52, horizon=1)
    scaler.save(tmp_path / "scaler.json")
    assert SeriesScaler.load(tmp_path / "scaler.json") == scaler
    values = np.array([315.0, 340.5, 371.2])
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(values)), values)


def test_baselines_on_a_linear_trend_are_known():
    slope = 0.5
    values = 10.0 + slope * np.arange(300)
    parts = split_chronological(len(values), 0.1, 0.2, window=52)
    baselines = series_baselines(values, parts["train"], parts["test"], window=52)
    assert baselines["baseline/naive_mae"] == pytest.approx(slope)
    assert baselines["baseline/seasonal_naive_mae"] == pytest.approx(52 * slope)
    assert baselines["baseline/linear_ar_mae"] == pytest.approx(0.0, abs=1e-6)


def test_regression_metrics_are_in_original_units():
    metrics = regression_metrics(np.array([[1.0], [2.0], [4.0]]), np.array([[1.0], [3.0], [6.0]]))
    assert metrics["test/mae"] == pytest.approx(1.0)
    assert metrics["test/rmse"] == pytest.approx(np.sqrt(5 / 3))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_forecaster_maps_windows_to_one_value_per_step(cell, activation):
    model = RNNForecaster(
        cell, hidden_size=8, num_layers=2, dropout=0.1, activation=activation, horizon=3
    )
    predictions = model(torch.randn(5, 12, 1))
    assert predictions.shape == (5, 3)
    assert torch.isfinite(predictions).all()


def test_forecaster_learns_a_sine_wave():
    """Backpropagation works end to end: the loss on a sine wave falls when fitted."""
    torch.manual_seed(0)
    wave = torch.sin(torch.arange(150, dtype=torch.float32) * 2 * torch.pi / 25)
    windows = wave.unfold(0, 25, 1)[:-1].unsqueeze(-1)  # (N, 25, 1)
    targets = wave[25:].unsqueeze(-1)  # (N, 1): the value after each window
    model = RNNForecaster(
        "gru", hidden_size=16, num_layers=1, dropout=0.0, activation="tanh", horizon=1
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(model(windows), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
