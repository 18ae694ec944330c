"""Raw image datasets stored as two NumPy arrays, validated before anything is split.

Layout of a dataset folder (what `data/mnist/` holds and what a user's own data must match):
    images.npy   (N, H, W) uint8, or a float array with values in [0, 255]
    labels.npy   (N,) integers in [0, number of classes)
`.npy` is used because `np.save` writes the same bytes every time, so a rebuilt `data/` hashes
exactly as `data.dvc` recorded it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lamina.config.schema import DataConfig
from lamina.errors import DataError

IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"


def write_image_arrays(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / IMAGES_FILE, np.ascontiguousarray(images, dtype=np.uint8))
    np.save(folder / LABELS_FILE, np.ascontiguousarray(labels, dtype=np.int64))


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found; run `lamina data ensure` or `dvc pull data.dvc`")
    try:
        # allow_pickle=False: a raw file must never be able to run code when it is read.
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        # numpy's own words for a pickle suggest loading it unsafely: never the advice here.
        problem = "not a .npy array of numbers" if "pickle" in str(exc) else str(exc)
        raise DataError(
            f"{path}: not a readable .npy array ({problem}); restore it with "
            "`dvc checkout data.dvc`"
        ) from None


def read_image_arrays(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate `images.npy` / `labels.npy`; returns uint8 images and int64 labels."""
    folder = Path(config.path)
    images_path, labels_path = folder / IMAGES_FILE, folder / LABELS_FILE
    images, labels = _load_array(images_path), _load_array(labels_path)

    expected = tuple(config.image_shape)
    if images.ndim != 3 or images.shape[1:] != expected:
        raise DataError(
            f"{images_path}: expected shape (N, {expected[0]}, {expected[1]}), got {images.shape}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds no images")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating) and not np.issubdtype(
            images.dtype, np.integer
        ):
            raise DataError(f"{images_path}: expected uint8 or float pixels, got {images.dtype}")
        if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
            bad = int((~np.isfinite(images)).any(axis=(1, 2)).sum())
            raise DataError(f"{images_path}: {bad} image(s) contain NaN or infinite pixels")
        if images.min() < 0 or images.max() > 255:
            raise DataError(
                f"{images_path}: pixel values must lie in [0, 255], "
                f"found [{images.min()}, {images.max()}]"
            )
        images = np.rint(images).astype(np.uint8)

    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: expected a 1-D integer array, got shape {labels.shape} "
            f"of {labels.dtype}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    out_of_range = (labels < 0) | (labels >= config.num_classes)
    if out_of_range.any():
        raise DataError(
            f"{labels_path}: {int(out_of_range.sum())} label(s) outside [0, {config.num_classes}) "
            f"(e.g. {int(labels[out_of_range][0])}); data.class_names lists {config.num_classes}"
        )
    return images, labels.astype(np.int64)
