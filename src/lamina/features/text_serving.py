"""Text after training: the registered model that takes raw text, and `lamina predict`'s
reader of a CSV or Parquet table of texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lamina.config.paths import ExperimentPaths
from lamina.errors import DataError, one_line
from lamina.serving.packaging import ArtifactModel, class_table
from lamina.serving.predict import PredictInput, read_csv_cells

TEXT_COLUMN = "text"


class TextClassifierModel(ArtifactModel):
    """Raw text in (`text` column), class name and probabilities out."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].fillna("").astype(str).tolist()
        tokens = torch.as_tensor(self.preprocessor.encode(texts, self.config.preprocess.max_length))
        with torch.no_grad():
            probabilities = torch.softmax(self.network(tokens), dim=1).numpy()
        return class_table(probabilities, self.config.data.class_names)


def raw_text_example(paths: ExperimentPaths) -> pd.DataFrame:
    """The first four raw test texts."""
    from lamina.data.text_table import read_text_split

    texts, _ = read_text_split(paths.splits / "test.parquet")
    return pd.DataFrame({TEXT_COLUMN: [str(text) for text in texts[:4]]})


def read_texts(path: Path) -> PredictInput:
    """The `text` column of a CSV or Parquet file, with its `id` column or the row number."""
    from lamina.data.text_table import check_texts

    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = read_csv_cells(path)
    elif suffix == ".parquet":
        table = _read_parquet(path)
    else:
        raise DataError(f"{path}: a text classifier reads a .csv or .parquet file with `text`")
    if TEXT_COLUMN not in table.columns:
        found = ", ".join(repr(str(c)) for c in table.columns) or "none"
        raise DataError(
            f"{path}: no column 'text' (columns found: {found}); the model reads the texts "
            "from a column named 'text'"
        )
    if table.empty:
        raise DataError(f"{path}: has a header but no rows")
    check_texts(path, TEXT_COLUMN, table[TEXT_COLUMN])
    id_column = "id" if "id" in table.columns else "row"
    ids = table["id"].to_numpy() if id_column == "id" else np.arange(len(table))
    rows = pd.DataFrame({id_column: ids, TEXT_COLUMN: table[TEXT_COLUMN].to_numpy()})
    return PredictInput(rows, (id_column,), TEXT_COLUMN)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
