"""One numeric time series in a CSV file, validated before it is split in time order.

Layout (what `data/co2/co2.csv` holds and what a user's own series must match): a header row,
then one row per time step in increasing time order. The time column holds ISO dates or
increasing numbers; the value column holds finite numbers (no gaps: fill them before, as
`build_co2` does). Splits are chronological: train first, then val, then the last
`test_fraction` as test, so a model is always scored on a future it never saw.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lamina.config.schema import SeriesDataConfig
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError, one_line

CO2_FILE = "co2.csv"
# Train needs this many targets beyond its first `window` values (inputs only) to fit anything.
MIN_TRAIN_TARGETS = 8
# Cells read as a missing value rather than as text that is not a number.
_MISSING_TOKENS = {"", "nan", "na", "n/a", "null", "none"}


def build_co2(folder: Path) -> None:
    """Weekly Mauna Loa CO2 (ppm, 1958-03-29 to 2001-12-29) as shipped by statsmodels.

    The 59 missing weeks of the statsmodels file are filled by time interpolation, so the raw
    file of this project *is* the interpolated series: models, baselines and metrics all see
    the same gap-free values. The CSV is written with a fixed float format and line ending so
    a rebuild has exactly the bytes `data.dvc` recorded.
    """
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"].interpolate(method="time")
    if weekly.isna().any():
        raise RuntimeError("statsmodels' co2 series still has gaps after interpolation")
    table = pd.DataFrame({"date": weekly.index.strftime("%Y-%m-%d"), "co2": weekly.to_numpy()})
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / CO2_FILE, index=False, float_format="%.4f", lineterminator="\n")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; run `lamina data ensure` or `dvc pull data.dvc`")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file; restore it with `dvc checkout data.dvc`")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8"
        ) from None
    try:
        # Every cell as text: numbers are checked below, so a bad cell can be named.
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({one_line(exc)})") from None


def _line(row: int) -> int:
    """File line of a data row (the header is line 1), so a user can find it in an editor."""
    return row + 2


def _parse_values(path: Path, column: str, cells: pd.Series) -> np.ndarray:
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
    missing = cells.str.strip().str.lower().isin(_MISSING_TOKENS).to_numpy()
    not_numbers = np.isnan(values) & ~missing
    if not_numbers.any():
        row = int(np.flatnonzero(not_numbers)[0])
        raise DataError(
            f"{path}: column '{column}' has {int(not_numbers.sum())} non-numeric value(s), "
            f"first {cells.iloc[row]!r} at line {_line(row)}; values must be numbers"
        )
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        row = int(np.flatnonzero(not_finite)[0])
        raise DataError(
            f"{path}: column '{column}' has {int(not_finite.sum())} missing, NaN or infinite "
            f"value(s), first at line {_line(row)}; fill the gaps (e.g. interpolate) first"
        )
    return values


def _utc_offset(cell: str) -> object:
    """The cell's UTC offset; None for a local time (no zone) or no time at all."""
    try:
        return pd.Timestamp(cell).utcoffset()
    except ValueError:
        return None


def _mixed_zones(path: Path, column: str, cells: pd.Series) -> str | None:
    """The error naming the first time in another zone than the first one's, if any."""
    offsets = [_utc_offset(cell) for cell in cells]
    row = next((i for i, offset in enumerate(offsets) if offset != offsets[0]), None)
    if row is None:
        return None
    return (
        f"{path}: column '{column}' mixes time zones: {cells.iloc[row]!r} at line {_line(row)} "
        f"is not in the zone of {cells.iloc[0]!r} at line {_line(0)}; write every time in one "
        "zone (e.g. UTC) or none"
    )


def _parse_times(path: Path, column: str, cells: pd.Series) -> np.ndarray:
    """Times as sortable numbers: plain numbers as they are, otherwise ISO dates."""
    as_numbers = pd.to_numeric(cells, errors="coerce")
    if not as_numbers.isna().any():
        return as_numbers.to_numpy(dtype=np.float64)
    try:
        as_dates = pd.to_datetime(cells, format="ISO8601", errors="coerce")
    except ValueError as exc:  # pandas refuses times of different time zones in one column
        raise DataError(_mixed_zones(path, column, cells) or f"{path}: {one_line(exc)}") from None
    if as_dates.isna().any():
        row = int(np.flatnonzero(as_dates.isna().to_numpy())[0])
        raise DataError(
            f"{path}: column '{column}' has a time that is neither a number nor an ISO date, "
            f"{cells.iloc[row]!r} at line {_line(row)}; write times as yyyy-mm-dd"
        )
    if as_dates.dt.tz is not None:  # one zone for all: compare them as UTC
        as_dates = as_dates.dt.tz_convert(None)
    return as_dates.to_numpy().astype("datetime64[ns]").astype(np.int64)


def read_series(config: SeriesDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate the series CSV; returns (times as str, values as float64) in order."""
    path = Path(config.path)
    table = _read_table(path)
    for column in (config.time_column, config.value_column):
        if column not in table.columns:
            raise DataError(
                f"{path}: no column '{column}' (found: {', '.join(map(str, table.columns))}); "
                f"set data.time_column / data.value_column to the CSV's header names"
            )
    if table.empty:
        raise DataError(f"{path}: holds a header but no rows")

    values = _parse_values(path, config.value_column, table[config.value_column])
    times = table[config.time_column].str.strip()
    order = _parse_times(path, config.time_column, times)
    not_increasing = np.flatnonzero(np.diff(order) <= 0)
    if len(not_increasing):
        row = int(not_increasing[0]) + 1
        raise DataError(
            f"{path}: times must be strictly increasing, but {times.iloc[row]!r} at line "
            f"{_line(row)} does not come after {times.iloc[row - 1]!r}; sort the rows by time "
            f"and drop duplicates"
        )
    return times.to_numpy(dtype=str), values


def split_chronological(
    num_values: int, val_fraction: float, test_fraction: float, window: int
) -> dict[str, np.ndarray]:
    """Positions whose value is a *target* in each split, in time order: train, val, test.

    The series is cut into three contiguous parts, val and test taking their fractions from the
    end. Every position of the val and test parts is a target (its inputs may come from earlier
    parts: they were observed before it). The first `window` train values are inputs only, so
    the train part is `values[: train[-1] + 1]`, and the val / test parts are
    `values[split[0] : split[-1] + 1]`.
    """
    num_test = round(num_values * test_fraction)
    num_val = round(num_values * val_fraction)
    num_train = num_values - num_val - num_test
    if min(num_val, num_test) < 1 or num_train < window + MIN_TRAIN_TARGETS:
        raise DataError(
            f"series too short for the window: {num_values} values give train/val/test parts "
            f"of {num_train}/{num_val}/{num_test}, but train needs at least window ({window}) + "
            f"{MIN_TRAIN_TARGETS} values and val and test at least 1 each; use a longer series, "
            f"a smaller preprocess.window or other split fractions"
        )
    return {
        "train": np.arange(window, num_train),
        "val": np.arange(num_train, num_train + num_val),
        "test": np.arange(num_train + num_val, num_values),
    }


def write_series_split(path: Path, times: np.ndarray, values: np.ndarray) -> None:
    """One contiguous part of the series as Parquet: `time` (string), `value` (float64)."""
    table = pa.table(
        {
            "time": pa.array(np.asarray(times).astype(str).tolist(), type=pa.string()),
            "value": pa.array(np.asarray(values, dtype=np.float64), type=pa.float64()),
        }
    )
    pq.write_table(table, path)


def read_series_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times as str, values as float64) of a part written by `write_series_split`."""
    table = read_parquet(path, written_by="prepare", columns=["time", "value"])
    times = np.asarray(table.column("time").to_pylist(), dtype=str)
    return times, table.column("value").to_numpy().astype(np.float64)
