"""Reading the Parquet files the stages write, with an error that says which stage to rerun."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lamina.errors import DataError, one_line

if TYPE_CHECKING:
    import pyarrow as pa


def read_parquet(path: Path, *, written_by: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or a folder of them, read in this process (all columns by default).

    `written_by` is the stage that writes `path`: a missing or unreadable one is a `DataError`
    that names the path and says to run that stage (again).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataError(f"{path}: not found; run the `{written_by}` stage first")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: not a readable Parquet file ({one_line(exc)}); "
            f"run the `{written_by}` stage again"
        ) from None
