"""Images: preprocessing with Ray Data, fitted on the training split only and applied to all.

`standardize`: one pixel mean and standard deviation over the training split. `unit_range`:
the fixed map [0, 255] -> [-1, 1] a GAN's tanh generator produces. Either way every split is
written as Parquet with a (1, H, W) float32 tensor column `image` and an int64 `label`.
The registered model and `lamina predict`'s reader are in `image_serving`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lamina.cluster.ray_runtime import write_parquet
from lamina.config.schema import ExperimentConfig
from lamina.data.image_parquet import pixels_from_arrow
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError
from lamina.features.kind import DataKind
from lamina.features.splits import read_split_datasets

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from mlflow.models import ModelSignature
    from torch import nn

    from lamina.config.paths import ExperimentPaths
    from lamina.evaluation.evaluate import Evaluation
    from lamina.serving.packaging import ArtifactModel
    from lamina.serving.predict import BatchPredictor, PredictInput


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


class Images(DataKind):
    """Labelled grey-scale images; models classify them."""

    name = "images"
    preprocessor_class = ImageStandardizer
    input_column, target_column = "image", "label"
    raw_input_column = "image"

    def preprocess_splits(
        self, config: ExperimentConfig, splits_dir: Path, features_dir: Path
    ) -> ImageStandardizer:
        return preprocess_image_splits(config, splits_dir, features_dir)

    def read_features(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        return read_image_features(folder)

    def evaluate(
        self, config: ExperimentConfig, model: nn.Module, paths: ExperimentPaths, plots_dir: Path
    ) -> Evaluation:
        from lamina.evaluation.evaluate import evaluate_classifier

        images, labels = self.read_features(paths.features / "test")
        return evaluate_classifier(config, model, images, labels, paths, plots_dir)

    def pyfunc_model(self) -> ArtifactModel:
        from lamina.features.image_serving import ImageClassifierModel

        return ImageClassifierModel()

    def pyfunc_example(self, config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
        from lamina.features.image_serving import raw_image_example

        return raw_image_example(config, paths)

    def pyfunc_signature(self, example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
        from lamina.features.image_serving import raw_image_signature

        return raw_image_signature(output)

    def read_predict_input(
        self, input_path: Path, logged_config: Callable[[], ExperimentConfig]
    ) -> PredictInput:
        from lamina.features.image_serving import read_image_folder

        return read_image_folder(input_path)

    def batch_predictor(self) -> type[BatchPredictor]:
        from lamina.features.image_serving import ImagePredictor

        return ImagePredictor
