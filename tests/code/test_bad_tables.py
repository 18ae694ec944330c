"""Tables a user hands `prepare` or `lamina predict` whose cells have the wrong kind: one
`DataError` naming the file, the column and the first bad cell, not a traceback from pandas,
pyarrow or MLflow's schema check further on."""

from pathlib import Path

import pandas as pd
import pytest

from lamina.config.schema import SeriesDataConfig
from lamina.data.series_table import read_series
from lamina.errors import DataError
from lamina.features.text_serving import read_texts


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([5, 7, 9], r"3 value\(s\) of column 'text' are not text \(e.g. 5 in data row 1"),
        (
            ["fine", None],
            r"1 value\(s\) of column 'text' are not text \(e.g. a missing value in data row 2",
        ),
    ],
)
def test_a_parquet_text_column_must_hold_strings(tmp_path, texts, expected):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": texts}).to_parquet(path)
    with pytest.raises(DataError, match=rf"^{path}: {expected}.*store the texts as strings"):
        read_texts(path)


def test_a_parquet_of_strings_is_read(tmp_path):
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": ["good", "bad"]}).to_parquet(path)
    assert read_texts(path).table["text"].tolist() == ["good", "bad"]


def _series(folder: Path, times: list[str]) -> SeriesDataConfig:
    path = folder / "series.csv"
    pd.DataFrame({"date": times, "value": range(len(times))}).to_csv(path, index=False)
    return SeriesDataConfig(path=str(path), value_column="value")


@pytest.mark.parametrize(
    ("times", "line"),
    [
        (["2000-01-01", "2000-01-08", "2000-01-15T00:00:00+02:00"], 4),  # local, then a zone
        (["2000-01-01T00:00+01:00", "2000-01-08T00:00+01:00", "2000-06-03T00:00+02:00"], 4),
    ],
)
def test_a_series_in_mixed_time_zones_is_one_error(tmp_path, times, line):
    config = _series(tmp_path, times)
    with pytest.raises(DataError, match=rf"column 'date' mixes time zones: .* at line {line} "):
        read_series(config)


def test_a_series_in_one_time_zone_is_read(tmp_path):
    config = _series(tmp_path, ["2000-01-01T00:00Z", "2000-01-08T00:00Z", "2000-01-15T00:00Z"])
    assert read_series(config)[1].tolist() == [0.0, 1.0, 2.0]
