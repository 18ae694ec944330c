"""Image splits as Parquet: `image` (fixed-size list of H*W uint8 pixels) and `label` (int64).

Written by `prepare` with pyarrow alone; read by `preprocess` through Ray Data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def images_to_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    num_pixels = images.shape[1] * images.shape[2]
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), num_pixels)
    height, width = images.shape[1:]
    return pa.table(
        {"image": pixels, "label": pa.array(labels, type=pa.int64())},
        metadata={b"lamina.image_shape": f"{height},{width}".encode()},
    )


def write_image_split(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    pq.write_table(images_to_table(images, labels), path)


def pixels_from_arrow(
    column: pa.ChunkedArray | pa.Array, image_shape: tuple[int, int]
) -> np.ndarray:
    """(B, H, W) uint8 from a fixed-size-list column (Ray Data hands these over as objects)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(-1, *image_shape)
