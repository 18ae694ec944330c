"""A series after training: the registered model that forecasts from raw recent values, and
`lamina predict`'s rolling forecast over a CSV series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.errors import DataError
from lamina.serving.packaging import ArtifactModel
from lamina.serving.predict import BatchPredictor, PredictInput, read_csv_cells

VALUE_COLUMN = "value"


class ForecasterModel(ArtifactModel):
    """Raw history in (`value` column, oldest first), the next `horizon` values out."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        window = self.config.preprocess.window
        history = model_input[VALUE_COLUMN].to_numpy(dtype=np.float64)
        if len(history) < window:
            raise ValueError(f"need at least {window} values of history, got {len(history)}")
        scaled = self.preprocessor.transform(history[-window:]).astype(np.float32)
        with torch.no_grad():
            forecast = self.network(torch.from_numpy(scaled).reshape(1, window, 1)).numpy()
        values = self.preprocessor.inverse_transform(forecast)[0]
        return pd.DataFrame({"forecast": values})  # one row per step ahead


def raw_series_example(config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
    """The first `window` raw values of the test part."""
    from lamina.data.series_table import read_series_split

    _, values = read_series_split(paths.splits / "test.parquet")
    return pd.DataFrame({VALUE_COLUMN: np.asarray(values[: config.preprocess.window], dtype=float)})


# --- `lamina predict`: a rolling forecast over a CSV series ---------------------------------


def read_series_origins(
    path: Path, time_column: str, value_column: str, window: int
) -> PredictInput:
    """Every time step with a full window of history up to it, and the whole series."""
    from lamina.config.schema import SeriesDataConfig
    from lamina.data.series_table import read_series

    if path.suffix.lower() != ".csv" or not path.is_file():
        raise DataError(f"{path}: a forecaster reads a CSV series ({time_column}, {value_column})")
    header = read_csv_cells(path).columns
    missing = [c for c in (time_column, value_column) if c not in header]
    if missing:
        found = ", ".join(repr(str(c)) for c in header) or "none"
        raise DataError(
            f"{path}: no column {' or '.join(map(repr, missing))} (columns found: {found}); "
            f"the model was trained on a series with columns '{time_column}' and "
            f"'{value_column}': rename the CSV's header to match"
        )
    config = SeriesDataConfig(path=str(path), time_column=time_column, value_column=value_column)
    times, values = read_series(config)
    if len(values) < window:
        raise DataError(
            f"{path}: {len(values)} values, but the model forecasts from the last {window}: "
            f"give it at least {window} rows"
        )
    origins = np.arange(window - 1, len(values))
    table = pd.DataFrame(
        {time_column: times[origins], value_column: values[origins], "position": origins}
    )
    return PredictInput(
        table, (time_column, value_column), "position", {"values": values, "window": window}
    )


class SeriesPredictor(BatchPredictor):
    """A forecast from each origin's window; the actor holds the whole series."""

    def __init__(self, *args: Any, values: np.ndarray, window: int) -> None:
        super().__init__(*args)
        self.values = np.asarray(values, dtype=np.float64)
        self.window = window

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        forecasts = []
        for position in batch["position"].to_numpy(dtype=np.int64):
            history = self.values[position - self.window + 1 : position + 1]
            output = self.model.predict(pd.DataFrame({VALUE_COLUMN: history}))
            forecasts.append(output["forecast"].to_numpy(dtype=np.float64))
        stacked = np.vstack(forecasts)
        return pd.DataFrame(
            {f"forecast_{step + 1}": stacked[:, step] for step in range(stacked.shape[1])}
        )
