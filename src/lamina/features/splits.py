"""The `prepare` stage's splits, read for the preprocess stage of every kind of data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lamina.data.parquet_files import read_parquet
from lamina.data.split import SPLIT_NAMES


def read_split_tables(splits_dir: Path) -> dict[str, Any]:
    """The `prepare` stage's three splits as Arrow tables, train first.

    Read here, in the stage's own process, and handed to Ray Data with `from_arrow`, rather than
    read by `ray.data.read_parquet`: its listing and reading tasks cost more than the work on
    splits of at most a few MB (docs/benchmarks.md). And on a cluster the splits are on this
    machine only, where read tasks on another node would not find them.
    """
    return {
        split: read_parquet(splits_dir / f"{split}.parquet", written_by="prepare")
        for split in SPLIT_NAMES
    }


def read_split_datasets(splits_dir: Path) -> dict[str, Any]:
    """The `prepare` stage's three splits as Ray datasets, train first."""
    import ray.data

    tables = read_split_tables(splits_dir)
    return {split: ray.data.from_arrow(table) for split, table in tables.items()}
