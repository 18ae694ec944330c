"""The raw text contract that `prepare` enforces, and the deterministic rebuild it relies on."""

import hashlib

import numpy as np
import pytest

from lamina.config.schema import TextDataConfig
from lamina.data.text_table import (
    REVIEWS_FILE,
    build_rotten_tomatoes,
    read_text_split,
    read_text_table,
    write_text_split,
)
from lamina.errors import DataError

CLASS_NAMES = ["fresh", "rotten"]


@pytest.fixture(scope="session")
def reviews_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw") / "rotten_tomatoes"
    build_rotten_tomatoes(folder)
    return folder


def _config(path) -> TextDataConfig:
    return TextDataConfig(path=str(path), class_names=CLASS_NAMES)


def test_shipped_reviews_meet_the_contract(reviews_dir):
    texts, labels = read_text_table(_config(reviews_dir / REVIEWS_FILE))
    assert (reviews_dir / REVIEWS_FILE).read_text().startswith("text,label\n")
    assert len(texts) == len(labels) == 12808
    assert np.bincount(labels).tolist() == [7403, 5405]  # fresh, rotten
    assert texts.dtype == object and labels.dtype == np.int64
    assert all(isinstance(text, str) and text.strip() for text in texts)
    assert 80 < np.mean([len(text) for text in texts]) < 150  # snippets, not whole reviews


def test_rebuild_is_byte_for_byte_identical(tmp_path, reviews_dir):
    """`data.dvc` can only be honoured after a rebuild if the builder is deterministic."""
    build_rotten_tomatoes(tmp_path / "again")
    first = hashlib.md5((reviews_dir / REVIEWS_FILE).read_bytes()).hexdigest()
    second = hashlib.md5((tmp_path / "again" / REVIEWS_FILE).read_bytes()).hexdigest()
    assert first == second


GOOD_ROWS = 'text,label\n"Sharp, funny, humane.",fresh\nA chore to sit through.,rotten\n'

BAD_TABLES = {
    "empty file": (b"", "the file is empty"),
    "whitespace only": (b"\n  \n", "the file is empty"),
    "not UTF-8": ("text,label\ncaf\u00e9 society,fresh\n".encode("latin-1"), "not UTF-8 text"),
    "binary junk": (bytes(range(256)) * 4, "not UTF-8 text"),
    "unclosed quote": (b'text,label\n"never closed,fresh\n', "not a readable CSV"),
    "wrong columns": (
        b"review,sentiment\ngood,fresh\n",
        "no column data.text_column='text' or data.label_column='label' "
        "(columns found: 'review', 'sentiment')",
    ),
    "no label column": (b"text\ngood\n", "no column data.label_column='label'"),
    "header only": (b"text,label\n", "has a header but no rows"),
    "empty and blank texts": (
        GOOD_ROWS.encode() + b",fresh\n   ,rotten\n",
        "2 row(s) with an empty or blank 'text' (data rows 3, 4)",
    ),
    "missing label": (GOOD_ROWS.encode() + b"Fine.,\n", "1 row(s) with no 'label' (data rows 3)"),
    "unknown label": (
        GOOD_ROWS.encode() + b"Meh.,splat\nOk.,Fresh\n",
        "2 row(s) with a label not in data.class_names (e.g. 'splat' in data row 3); "
        "allowed: 'fresh', 'rotten'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_raw_text_is_one_error_naming_the_file(tmp_path, case):
    content, expected = BAD_TABLES[case]
    path = tmp_path / REVIEWS_FILE
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_text_table(_config(path))
    message = str(error.value)
    assert expected in message
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="file not found; run `lamina data ensure`"):
        read_text_table(_config(tmp_path / "nowhere.csv"))


def test_quoted_commas_newlines_and_custom_columns_are_read(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('id,body,verdict\n1,"Long, slow\nand dull",bad\n2,Great fun,good\n')
    config = TextDataConfig(
        path=str(path), text_column="body", label_column="verdict", class_names=["good", "bad"]
    )
    texts, labels = read_text_table(config)
    assert texts.tolist() == ["Long, slow\nand dull", "Great fun"]
    assert labels.tolist() == [1, 0]


def test_split_round_trips_through_parquet(tmp_path):
    texts = np.array(["caf\u00e9 \u2019n\u2019 \u00e7a", "", "plain"], dtype=object)
    labels = np.array([1, 0, 1])
    write_text_split(tmp_path / "train.parquet", texts, labels)
    read_texts, read_labels = read_text_split(tmp_path / "train.parquet")
    assert read_texts.tolist() == texts.tolist()
    assert read_labels.dtype == np.int64 and read_labels.tolist() == [1, 0, 1]
