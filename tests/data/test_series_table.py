"""The series data contract that `prepare` enforces, and the deterministic rebuild it relies on."""

import hashlib

import numpy as np
import pytest

from lamina.config.schema import SeriesDataConfig
from lamina.data.series_table import CO2_FILE, build_co2, read_series
from lamina.errors import DataError


@pytest.fixture(scope="module")
def co2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw") / "co2"
    build_co2(folder)
    return folder


def _config(path) -> SeriesDataConfig:
    return SeriesDataConfig(path=str(path), time_column="date", value_column="co2")


def test_shipped_co2_is_complete_and_in_time_order(co2_dir):
    times, values = read_series(_config(co2_dir / CO2_FILE))
    assert len(values) == 2284 and values.dtype == np.float64
    assert np.isfinite(values).all()
    assert times[0] == "1958-03-29" and times[-1] == "2001-12-29"
    assert values.min() > 310 and values.max() < 380  # ppm, as Mauna Loa measured


def test_rebuild_is_byte_for_byte_identical(co2_dir, tmp_path):
    """`data.dvc` can only be honoured after a rebuild if the builder is deterministic."""
    build_co2(tmp_path / "again")
    first = hashlib.md5((co2_dir / CO2_FILE).read_bytes()).hexdigest()
    second = hashlib.md5((tmp_path / "again" / CO2_FILE).read_bytes()).hexdigest()
    assert first == second


GOOD = "date,co2\n2000-01-01,1.5\n2000-01-08,2.5\n2000-01-15,3.5\n"

BAD_SERIES = {
    "empty file": (b"", "empty file"),
    "header only": (b"date,co2\n", "holds a header but no rows"),
    "not UTF-8": ("date,co2\n2000-01-01,1.5\n".encode("utf-16"), "not UTF-8"),
    "ragged rows": (b'date,co2\n2000-01-01,1.5\n2000-01-08,"2.5\n', "not a readable CSV"),
    "no value column": (b"date,ppm\n2000-01-01,1.5\n", "no column 'co2' (found: date, ppm)"),
    "no time column": (b"day,co2\n2000-01-01,1.5\n", "no column 'date' (found: day, co2)"),
    "non-numeric": (GOOD.replace("2.5", "high").encode(), "1 non-numeric value(s), first 'high'"),
    "NaN": (GOOD.replace("2.5", "nan").encode(), "1 missing, NaN or infinite value(s)"),
    "gap": (GOOD.replace("2.5", "").encode(), "first at line 3"),
    "infinite": (GOOD.replace("3.5", "inf").encode(), "first at line 4"),
    "unsorted times": (
        GOOD.replace("2000-01-08", "1999-12-01").encode(),
        "times must be strictly increasing",
    ),
    "repeated time": (
        GOOD.replace("2000-01-08", "2000-01-01").encode(),
        "times must be strictly increasing",
    ),
    "bad time": (GOOD.replace("2000-01-08", "soon").encode(), "neither a number nor an ISO date"),
}


@pytest.mark.parametrize("case", sorted(BAD_SERIES))
def test_bad_series_is_one_error_naming_the_file(tmp_path, case):
    content, expected = BAD_SERIES[case]
    path = tmp_path / "series.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_series(_config(path))
    message = str(error.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="file not found; run `lamina data ensure`"):
        read_series(_config(tmp_path / "nowhere.csv"))


def test_numeric_times_are_accepted(tmp_path):
    path = tmp_path / "steps.csv"
    path.write_text("date,co2\n1,0.5\n2,0.25\n10,1\n")
    times, values = read_series(_config(path))
    assert times.tolist() == ["1", "2", "10"]
    assert values.tolist() == [0.5, 0.25, 1.0]
