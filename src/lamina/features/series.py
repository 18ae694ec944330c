"""A time series: Ray Data preprocessing (scale fitted on the train part, then windows) and
test-split evaluation beside the naive, seasonal and AR baselines.

`prepare` writes the series as three contiguous parts (`splits/{train,val,test}.parquet`). Here
a mean and standard deviation are fitted on the train part only, the whole series is scaled
with them, and every target position becomes one row: the `window` scaled values before it and
the `horizon` scaled values from it on. A row belongs to the split of its target, so val and
test windows may read values of earlier parts (observed before their target) but no target is
ever an input of its own window. The registered model and `lamina predict`'s reader are in
`series_serving`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lamina.cluster.ray_runtime import write_parquet
from lamina.config.schema import ExperimentConfig
from lamina.data.parquet_files import read_parquet
from lamina.data.split import SPLIT_NAMES
from lamina.errors import DataError
from lamina.features.kind import DataKind
from lamina.features.splits import read_split_tables

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from torch import nn

    from lamina.config.paths import ExperimentPaths
    from lamina.evaluation.evaluate import Evaluation
    from lamina.serving.packaging import ArtifactModel
    from lamina.serving.predict import BatchPredictor, PredictInput


@dataclass(frozen=True)
class SeriesScaler:
    """What `preprocess` fitted; saved as JSON so the registered model can undo the scaling."""

    mean: float
    std: float
    window: int
    horizon: int

    # float64 both ways, so metrics in series units never inherit float32 rounding.
    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse_transform(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype=np.float64) * self.std + self.mean

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SeriesScaler:
        if not path.is_file():
            raise DataError(f"{path}: fitted series scaler not found; run `dvc repro`")
        return cls(**json.loads(path.read_text()))


def _value_moments(batch: pa.Table) -> dict[str, np.ndarray]:
    values = batch.column("value").to_numpy().astype(np.float64)
    return {
        "value_sum": np.array([values.sum()]),
        "value_sq_sum": np.array([np.square(values).sum()]),
        "value_count": np.array([len(values)], dtype=np.int64),
    }


def fit_series_scaler(train, window: int, horizon: int) -> SeriesScaler:
    """One pass over the (Ray) train part; the val and test parts are never looked at."""
    totals = train.map_batches(_value_moments, batch_format="pyarrow").sum(
        ["value_sum", "value_sq_sum", "value_count"]
    )
    mean = totals["sum(value_sum)"] / totals["sum(value_count)"]
    variance = totals["sum(value_sq_sum)"] / totals["sum(value_count)"] - mean**2
    std = math.sqrt(max(variance, 0.0))
    if std == 0.0:
        raise DataError("every training value of the series is the same: nothing to forecast")
    return SeriesScaler(mean=float(mean), std=float(std), window=window, horizon=horizon)


def _scale_batch(batch: dict[str, np.ndarray], scaler: SeriesScaler) -> dict[str, np.ndarray]:
    return {"split": batch["split"], "value": scaler.transform(batch["value"])}


def _gather_windows(
    batch: dict[str, np.ndarray], scaled: np.ndarray, window: int, horizon: int
) -> dict[str, np.ndarray]:
    """Rows for a batch of target positions t: inputs scaled[t-window:t], targets scaled[t:t+h]."""
    targets = batch["data"].astype(np.int64)  # (B,)
    inputs = targets[:, None] + np.arange(-window, 0)  # (B, window), all before t
    outputs = targets[:, None] + np.arange(horizon)  # (B, horizon), t onwards
    return {
        "window": scaled[inputs][:, :, None].astype(np.float32),  # (B, window, 1)
        "target": scaled[outputs].astype(np.float32),  # (B, horizon)
        "target_index": targets,
    }


def _target_positions(
    part_lengths: dict[str, int], window: int, horizon: int
) -> dict[str, np.ndarray]:
    """Target positions of each split whose whole horizon lies inside that split."""
    positions, start = {}, 0
    for split in SPLIT_NAMES:
        end = start + part_lengths[split]
        # The first `window` train values are only ever inputs.
        first = window if split == "train" else start
        positions[split] = np.arange(first, end - horizon + 1)
        if len(positions[split]) == 0:
            raise DataError(
                f"the {split} part has {part_lengths[split]} values: no complete window "
                f"(window {window}, horizon {horizon}) fits; use a longer series, other "
                f"split fractions or a smaller preprocess.window / horizon"
            )
        start = end
    return positions


def preprocess_series_splits(
    config: ExperimentConfig, splits_dir: Path, features_dir: Path
) -> SeriesScaler:
    """Fit on `splits_dir/train.parquet`, write `features_dir/<split>/` windows for each split."""
    import ray.data

    window, horizon = config.preprocess.window, config.preprocess.horizon
    # Ray's workers do not share the driver's working directory: hand them absolute paths.
    features_dir = features_dir.resolve()
    tables = read_split_tables(splits_dir)

    scaler = fit_series_scaler(ray.data.from_arrow(tables["train"]), window, horizon)
    # All parts in one pass (each Ray execution costs seconds). A part is one table, so one
    # block, whose rows stay in time order; `split` says whose rows they are.
    labelled = [
        table.append_column("split", pa.array([split] * len(table)))
        for split, table in tables.items()
    ]
    scaled_rows = (
        ray.data.from_arrow(labelled)
        .map_batches(_scale_batch, batch_format="numpy", fn_kwargs={"scaler": scaler})
        .to_pandas()
    )
    scaled_parts = [scaled_rows.loc[scaled_rows["split"] == split, "value"] for split in tables]
    scaled = np.concatenate(scaled_parts)  # the whole series, in time order
    lengths = {split: len(table) for split, table in tables.items()}

    for split, targets in _target_positions(lengths, window, horizon).items():
        # One block of target positions: one output file, rows in target order.
        windows = ray.data.from_numpy(targets).map_batches(
            _gather_windows,
            batch_format="numpy",
            fn_kwargs={"scaled": scaled, "window": window, "horizon": horizon},
        )
        write_parquet(windows, features_dir / split)
    return scaler


def read_series_features(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows (N, W, 1) float32, targets (N, H) float32, target_index (N,)) of one split."""
    import ray.data  # noqa: F401  registers Ray's tensor type, so pyarrow can read the columns

    table = read_parquet(folder, written_by="preprocess").sort_by("target_index")
    windows = table.column("window").combine_chunks().to_numpy()
    targets = table.column("target").combine_chunks().to_numpy()
    return (
        np.asarray(windows, dtype=np.float32),
        np.asarray(targets, dtype=np.float32),
        table.column("target_index").to_numpy(),
    )


def evaluate_forecaster(
    config: ExperimentConfig, model: nn.Module, paths: ExperimentPaths, plots_dir: Path
) -> Evaluation:
    """MAE and RMSE in the series' own units, beside the naive, seasonal and AR baselines."""
    import pandas as pd

    from lamina.data.series_table import read_series_split
    from lamina.evaluation.baselines.series import regression_metrics, series_baselines
    from lamina.evaluation.evaluate import Evaluation, predict_batches
    from lamina.evaluation.plots import plot_forecast, plot_training_curves

    scaler = SeriesScaler.load(paths.preprocessor)
    windows, targets, test_index = read_series_features(paths.features / "test")
    _, _, train_index = read_series_features(paths.features / "train")
    predicted = scaler.inverse_transform(predict_batches(model, windows).numpy())
    actual = scaler.inverse_transform(targets)

    parts = [read_series_split(paths.splits / f"{name}.parquet") for name in SPLIT_NAMES]
    times = np.concatenate([np.asarray(part[0]) for part in parts])
    values = np.concatenate([np.asarray(part[1], dtype=np.float64) for part in parts])
    metrics = regression_metrics(predicted[:, 0], actual[:, 0])
    metrics |= series_baselines(values, train_index, test_index, config.preprocess.window)

    predictions = pd.DataFrame(
        {"time": times[test_index], "actual": actual[:, 0], "predicted": predicted[:, 0]}
    )
    plot_forecast(predictions, plots_dir / "forecast.png")
    plot_training_curves(pd.read_csv(paths.history), plots_dir / "training_curves.png")
    return Evaluation(metrics, predictions)


class Series(DataKind):
    """One numeric time series; models forecast the next `horizon` values from a window."""

    name = "series"
    preprocessor_class = SeriesScaler
    input_column, target_column = "window", "target"
    raw_input_column = "value"

    def preprocess_splits(
        self, config: ExperimentConfig, splits_dir: Path, features_dir: Path
    ) -> SeriesScaler:
        return preprocess_series_splits(config, splits_dir, features_dir)

    def read_features(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        windows, targets, _ = read_series_features(folder)
        return windows, targets

    def evaluate(
        self, config: ExperimentConfig, model: nn.Module, paths: ExperimentPaths, plots_dir: Path
    ) -> Evaluation:
        return evaluate_forecaster(config, model, paths, plots_dir)

    def pyfunc_model(self) -> ArtifactModel:
        from lamina.features.series_serving import ForecasterModel

        return ForecasterModel()

    def pyfunc_example(self, config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
        from lamina.features.series_serving import raw_series_example

        return raw_series_example(config, paths)

    def read_predict_input(
        self, input_path: Path, logged_config: Callable[[], ExperimentConfig]
    ) -> PredictInput:
        from lamina.features.series_serving import read_series_origins

        config = logged_config()  # the forecaster's window and series columns
        data = config.data
        return read_series_origins(
            input_path, data.time_column, data.value_column, config.preprocess.window
        )

    def batch_predictor(self) -> type[BatchPredictor]:
        from lamina.features.series_serving import SeriesPredictor

        return SeriesPredictor
