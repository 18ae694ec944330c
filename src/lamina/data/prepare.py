"""The prepare stage for every kind of data: validate the raw files, split, write Parquet.

Labelled images and texts are split stratified and seeded; a series chronologically, so the
test part is the most recent stretch and nothing from the future leaks into training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from lamina.config.schema import ExperimentConfig, ImageDataConfig, TextDataConfig
from lamina.data.split import split_train_val_test, stratified_subsample
from lamina.errors import DataError


def prepare_splits(config: ExperimentConfig, out_dir: Path) -> dict[str, int]:
    """Write `out_dir/{train,val,test}.parquet`; returns the row count of each split."""
    data, split = config.data, config.split
    if isinstance(data, ImageDataConfig | TextDataConfig):
        if isinstance(data, ImageDataConfig):
            from lamina.data.image_arrays import read_image_arrays
            from lamina.data.image_parquet import write_image_split as write_split

            rows, labels = read_image_arrays(data)
        else:
            from lamina.data.text_table import read_text_table
            from lamina.data.text_table import write_text_split as write_split

            rows, labels = read_text_table(data)
        if data.max_samples is not None:
            keep = stratified_subsample(labels, data.max_samples, split.seed)
            rows, labels = rows[keep], labels[keep]
        with _naming(data.path):
            parts = split_train_val_test(
                labels, split.val_fraction, split.test_fraction, split.seed
            )
        for name, indices in parts.items():
            write_split(out_dir / f"{name}.parquet", rows[indices], labels[indices])
        return {name: len(indices) for name, indices in parts.items()}

    from lamina.data.series_table import read_series, split_chronological, write_series_split

    times, values = read_series(data)
    with _naming(data.path):
        targets = split_chronological(
            len(values), split.val_fraction, split.test_fraction, config.preprocess.window
        )
    # Contiguous parts; the train part also keeps the first `window` values (inputs only).
    starts = {"train": 0, "val": targets["val"][0], "test": targets["test"][0]}
    for name, positions in targets.items():
        part = slice(starts[name], positions[-1] + 1)
        write_series_split(out_dir / f"{name}.parquet", times[part], values[part])
    return {name: len(positions) for name, positions in targets.items()}


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """A data error found while splitting names the raw file the rows came from."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
