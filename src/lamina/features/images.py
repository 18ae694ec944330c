"""Image preprocessing with Ray Data: fit on the training split only, apply to all splits.

`standardize`: one pixel mean and standard deviation over the training split. `unit_range`:
the fixed map [0, 255] -> [-1, 1] a GAN's tanh generator produces. Either way every split is
written as Parquet with a (1, H, W) float32 tensor column `image` and an int64 `label`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lamina.cluster.ray_runtime import write_parquet
from lamina.config.schema import ExperimentConfig
from lamina.data.image_parquet import pixels_from_arrow
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError


@dataclass(frozen=True)
class ImageStandardizer:
    """What `preprocess` fitted; saved as JSON and folded into the registered model."""

    pixel_mean: float
    pixel_std: float
    image_shape: tuple[int, int]
    class_names: list[str]
    fitted_on_rows: int

    def transform(self, batch: pa.Table) -> dict[str, np.ndarray]:
        pixels = pixels_from_arrow(batch.column("image"), self.image_shape)
        images = (pixels.astype(np.float32) - self.pixel_mean) / self.pixel_std
        return {
            "image": images[:, np.newaxis, :, :],
            "label": batch.column("label").to_numpy(),
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ImageStandardizer:
        if not path.is_file():
            raise DataError(f"{path}: fitted preprocessor not found; run `dvc repro`")
        fields = json.loads(path.read_text())
        fields["image_shape"] = tuple(fields["image_shape"])
        return cls(**fields)


def _pixel_moments(batch: pa.Table, image_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    pixels = pixels_from_arrow(batch.column("image"), image_shape).astype(np.float64)
    return {
        "pixel_sum": np.array([pixels.sum()]),
        "pixel_sq_sum": np.array([np.square(pixels).sum()]),
        "pixel_count": np.array([pixels.size], dtype=np.int64),
        "rows": np.array([len(pixels)], dtype=np.int64),
    }


def fit_image_standardizer(train, config: ExperimentConfig) -> ImageStandardizer:
    """One pass over the (Ray) training dataset; the other splits are never looked at."""
    shape = config.data.image_shape
    if config.preprocess.kind == "unit_range":
        return ImageStandardizer(127.5, 127.5, tuple(shape), list(config.data.class_names), 0)
    totals = train.map_batches(
        _pixel_moments, batch_format="pyarrow", fn_kwargs={"image_shape": shape}
    ).sum(["pixel_sum", "pixel_sq_sum", "pixel_count", "rows"])
    mean = totals["sum(pixel_sum)"] / totals["sum(pixel_count)"]
    variance = totals["sum(pixel_sq_sum)"] / totals["sum(pixel_count)"] - mean**2
    std = math.sqrt(max(variance, 0.0))
    if std == 0.0:
        raise DataError("every training pixel has the same value: the images carry no signal")
    return ImageStandardizer(
        pixel_mean=float(mean),
        pixel_std=float(std),
        image_shape=tuple(shape),
        class_names=list(config.data.class_names),
        fitted_on_rows=int(totals["sum(rows)"]),
    )


def preprocess_image_splits(
    config: ExperimentConfig, splits_dir: Path, features_dir: Path
) -> ImageStandardizer:
    """Fit on `splits_dir/train.parquet`, write `features_dir/<split>/` for every split."""
    from lamina.features.preprocess import read_split_datasets

    datasets = read_split_datasets(splits_dir)
    standardizer = fit_image_standardizer(datasets["train"], config)
    for split, dataset in datasets.items():
        transformed = dataset.map_batches(standardizer.transform, batch_format="pyarrow")
        write_parquet(transformed, features_dir / split)
    return standardizer


def read_image_features(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, H, W) float32, labels (N,)) of one split written by
    `preprocess_image_splits`."""
    import ray.data  # noqa: F401  registers Ray's tensor type, so pyarrow can read the column

    table = read_parquet(folder, written_by="preprocess")
    images = table.column("image").combine_chunks().to_numpy()
    return np.asarray(images, dtype=np.float32), table.column("label").to_numpy()
