"""Images after training: the registered model that takes raw pixels, and `lamina predict`'s
reader of a folder of image files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.errors import DataError, one_line
from lamina.serving.packaging import ArtifactModel, class_table
from lamina.serving.predict import BatchPredictor, PredictInput

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

IMAGE_COLUMN = "image"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The first bytes of every PNG / JPEG file: a cheap check of each file before Ray starts.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


# --- the registered model -------------------------------------------------------------------


class ImageClassifierModel(ArtifactModel):
    """Raw grayscale images in (`image` column), class name and probabilities out.

    Each cell of `image` is one image, either
    - an (H, W) array, or nested list, of raw pixel values in [0, 255] (any numeric dtype),
      H and W exactly the training images' `data.image_shape`; or
    - the path (`str`) of a PNG or JPEG file, read with Pillow and converted to 8-bit
      grayscale ("L"); when its size differs from `data.image_shape` it is resized to it with
      bilinear interpolation.
    Images should look like the training images (MNIST: light digits on a black background).
    The fitted pixel scaler is inside (`RawImageClassifier`'s buffers). A missing `image`
    column, a cell of the wrong shape or type, or a file that cannot be read as an image raises
    a ValueError naming the column, the row or the path.
    """

    def load(self, artifacts: dict[str, str]) -> None:
        from lamina.models.raw_input import RawImageClassifier

        super().load(artifacts)
        scaler = self.preprocessor
        self.network = RawImageClassifier(self.network, scaler.pixel_mean, scaler.pixel_std).eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"the input needs a column `{IMAGE_COLUMN}`: one image per row, an (H, W) array "
                "of pixel values in [0, 255] or the path of a PNG/JPEG file"
            )
        shape = tuple(self.config.data.image_shape)
        images = [
            _image_pixels(cell, row, shape) for row, cell in enumerate(model_input[IMAGE_COLUMN])
        ]
        pixels = np.stack(images) if images else np.zeros((0, *shape), dtype=np.float32)
        with torch.no_grad():
            probabilities = self.network(torch.from_numpy(pixels)).numpy()
        return class_table(probabilities, self.config.data.class_names)


def _image_pixels(cell: object, row: int, shape: tuple[int, int]) -> np.ndarray:
    """One `image` cell as (H, W) float32 pixels."""
    if isinstance(cell, str):
        return _read_image_file(cell, shape)
    if isinstance(cell, np.ndarray) and cell.dtype == object:
        cell = cell.tolist()  # rows as separate arrays, as pandas may hand a nested list over
    try:
        pixels = np.asarray(cell, dtype=np.float32)
    except (TypeError, ValueError):
        pixels = None
    if pixels is None or pixels.shape != shape:
        got = type(cell).__name__ if pixels is None else f"shape {pixels.shape}"
        raise ValueError(
            f"`{IMAGE_COLUMN}` row {row}: expected an array of {shape[0]}x{shape[1]} pixel "
            f"values (or a PNG/JPEG path, resized to fit), got {got}"
        )
    return pixels


def _read_image_file(path: str, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except OSError as exc:  # missing, unreadable, or not an image (UnidentifiedImageError)
        raise ValueError(f"`{IMAGE_COLUMN}`: cannot read {path!r} as an image: {exc}") from None
    height, width = shape
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32)


def raw_image_example(config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
    """Four raw test images, as (H, W) pixel arrays."""
    from lamina.data.image_parquet import pixels_from_arrow
    from lamina.data.parquet_files import read_parquet

    test = read_parquet(paths.splits / "test.parquet", written_by="prepare").slice(0, 4)
    pixels = pixels_from_arrow(test.column("image"), config.data.image_shape)
    return pd.DataFrame({IMAGE_COLUMN: list(pixels)})


def raw_image_signature(output: pd.DataFrame) -> ModelSignature:
    """The registered model's signature: `image` of any type, the inferred output."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    # Inferred from arrays, `image` would be Array(Array(float)): MLflow's schema check would
    # then refuse uint8 or float64 pixels, nested lists (what a JSON request or the saved
    # example turns arrays into) and file paths. `Any` lets every form through to `predict`,
    # which checks each cell itself. Optional, so that a frame without `image` reaches
    # `predict` too and fails with the same ValueError a direct call gives.
    inputs = Schema([ColSpec(AnyType(), IMAGE_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=infer_signature(model_output=output).outputs)


# --- `lamina predict`: a folder of image files ----------------------------------------------


def read_image_folder(folder: Path) -> PredictInput:
    """Every PNG/JPEG under `folder`, sorted; each one's first bytes checked already."""
    if not folder.is_dir():
        raise DataError(f"{folder}: an image classifier reads a folder of PNG or JPEG files")
    files = sorted(
        (
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        ),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    if not files:
        raise DataError(
            f"{folder}: no image files in it or its subfolders "
            f"(looked for {', '.join('*' + s for s in IMAGE_SUFFIXES)})"
        )
    for path in files:
        check_image_header(path)
    table = pd.DataFrame(
        {
            "path": [path.relative_to(folder).as_posix() for path in files],
            IMAGE_COLUMN: [str(path.resolve()) for path in files],
        }
    )
    return PredictInput(table, ("path",), IMAGE_COLUMN)


def check_image_header(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not head.startswith(IMAGE_SIGNATURES):
        problem = "empty file" if not head else "its first bytes are not a PNG or JPEG header"
        raise DataError(f"{path}: not a PNG or JPEG image ({problem}); replace or remove it")


def read_image(path: str) -> np.ndarray:
    """(H, W) uint8 grey-scale pixels; an unreadable file is a `DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: not a readable PNG or JPEG image ({one_line(exc)}); replace or remove it"
        ) from None


class ImagePredictor(BatchPredictor):
    """Hands the model file paths (the image classifiers' contract: read, grey-scaled, resized)."""

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        paths = batch[IMAGE_COLUMN].tolist()
        try:
            return self.model.predict(pd.DataFrame({IMAGE_COLUMN: paths}))
        except Exception:
            # Name the file that broke the batch, if one did (each read raises for its file).
            for path in paths:
                read_image(path)
            raise
