"""The preprocess stage for every kind of data: fit on the training split, apply to all.

Each kind has its own module (`images`, `text`, `series`) with a fitted object that is saved as
`preprocessor.json` and later packed into the registered model, so the model takes raw input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lamina.config.schema import ExperimentConfig
from lamina.data.parquet_files import read_parquet


def read_split_tables(splits_dir: Path) -> dict[str, Any]:
    """The `prepare` stage's three splits as Arrow tables, train first.

    Read here, in the stage's own process, and handed to Ray Data with `from_arrow`, rather than
    read by `ray.data.read_parquet`: its listing and reading tasks cost 3 to 10 s per pass on 2
    cores, more than the work on splits of at most a few MB (measured: the CNN's preprocessing
    35 -> 16 s, the series' 26 -> 15 s). And on a cluster the splits are on this machine only,
    where read tasks on another node would not find them.
    """
    from lamina.data.split import SPLIT_NAMES

    return {
        split: read_parquet(splits_dir / f"{split}.parquet", written_by="prepare")
        for split in SPLIT_NAMES
    }


def read_split_datasets(splits_dir: Path) -> dict[str, Any]:
    """The `prepare` stage's three splits as Ray datasets, train first."""
    import ray.data

    tables = read_split_tables(splits_dir)
    return {split: ray.data.from_arrow(table) for split, table in tables.items()}


def preprocess_splits(config: ExperimentConfig, splits_dir: Path, features_dir: Path) -> Any:
    """Write `features_dir/{train,val,test}/` (Parquet) and return the fitted preprocessor."""
    kind = config.data.kind
    if kind == "images":
        from lamina.features.images import preprocess_image_splits

        return preprocess_image_splits(config, splits_dir, features_dir)
    if kind == "text":
        from lamina.features.text import preprocess_text_splits

        return preprocess_text_splits(config, splits_dir, features_dir)
    from lamina.features.series import preprocess_series_splits

    return preprocess_series_splits(config, splits_dir, features_dir)


def load_preprocessor(config: ExperimentConfig, path: Path) -> Any:
    from lamina.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: fitted preprocessor not found; run the `preprocess` stage")
    kind = config.data.kind
    if kind == "images":
        from lamina.features.images import ImageStandardizer

        return ImageStandardizer.load(path)
    if kind == "text":
        from lamina.features.text import Vocabulary

        return Vocabulary.load(path)
    from lamina.features.series import SeriesScaler

    return SeriesScaler.load(path)


def vocabulary_tokens(config: ExperimentConfig, preprocessor_path: Path) -> list[str] | None:
    """The tokens of the vocabulary fitted on train, by id: a text model is sized by it and
    may start from pretrained vectors of its words. Other models need nothing."""
    if config.data.kind != "text":
        return None
    return list(load_preprocessor(config, preprocessor_path).tokens)


def vocabulary_size(config: ExperimentConfig, preprocessor_path: Path) -> int | None:
    tokens = vocabulary_tokens(config, preprocessor_path)
    return None if tokens is None else len(tokens)


def read_features(config: ExperimentConfig, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, targets) of one preprocessed split, as numpy arrays."""
    kind = config.data.kind
    if kind == "images":
        from lamina.features.images import read_image_features

        return read_image_features(folder)
    if kind == "text":
        from lamina.features.text import read_text_features

        return read_text_features(folder)
    from lamina.features.series import read_series_features

    windows, targets, _ = read_series_features(folder)
    return windows, targets
