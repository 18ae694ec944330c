"""What each kind of experiment registers: a model that takes raw input, preprocessing inside.

- image classifiers: a pyfunc holding the fitted pixel scaler; input a DataFrame with an `image`
  column (per row an (H, W) array of pixel values in [0, 255], or a PNG/JPEG file path), output
  `prediction` (class name) and one `probability_<class>` column per class.
- text classifiers: a pyfunc holding the vocabulary; input a DataFrame with a `text` column,
  output `prediction` (class name) and one `probability_<class>` column per class.
- forecasters: a pyfunc holding the scaler; input a DataFrame with a `value` column (the
  recent history, at least `window` rows), output the next `horizon` values.
- GAN generators: a torch module; input noise (B, latent_dim), output pixels (B, 1, H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from lamina.config.compose import dump_config, load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig

MODEL_NAME_IN_RUN = "model"
IMAGE_COLUMN = "image"


def pip_requirements() -> list[str]:
    """Explicit requirements: keeps the CPU torch build and skips MLflow's slow inference."""
    from importlib.metadata import version

    return [f"torch=={torch.__version__.split('+')[0]}", f"lamina=={version('lamina')}"]


class GeneratedPixels(nn.Module):
    """A generator's tanh output mapped back to pixel values in [0, 255]."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return (self.generator(noise) + 1.0) * 127.5


def log_model_version(
    config: ExperimentConfig, paths: ExperimentPaths, model: nn.Module, run_id: str
) -> int:
    """Log the raw-input form of `model` into the training run and register it; its version."""
    import mlflow

    mlflow.set_tracking_uri(_uri(paths))
    with mlflow.start_run(run_id=run_id):
        if config.task == "generation":
            info = _log_torch(config, GeneratedPixels(model).eval(), _noise_example(config))
        else:
            info = _log_pyfunc(config, paths, model)
    return int(info.registered_model_version)


def _uri(paths: ExperimentPaths) -> str:
    from lamina.tracking.runs import tracking_uri

    return tracking_uri(paths.root.resolve())


def _log_torch(config: ExperimentConfig, model: nn.Module, example: np.ndarray):
    import mlflow.pytorch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    return mlflow.pytorch.log_model(
        model,
        name=MODEL_NAME_IN_RUN,
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=config.name,
        pip_requirements=pip_requirements(),
    )


def _noise_example(config: ExperimentConfig) -> np.ndarray:
    generator = torch.Generator().manual_seed(config.train.seed)
    return torch.randn(4, config.model.latent_dim, generator=generator).numpy()


def _log_pyfunc(config: ExperimentConfig, paths: ExperimentPaths, model: nn.Module):
    import tempfile

    import mlflow.pyfunc

    # MLflow copies the artifacts into the model; the staging folder is only needed meanwhile.
    with tempfile.TemporaryDirectory() as staging:
        weights = Path(staging) / "model.pt"
        torch.save(model.state_dict(), weights)
        config_file = Path(staging) / "config.yaml"
        config_file.write_text(dump_config(config))
        artifacts = {
            "weights": str(weights),
            "config": str(config_file),
            "preprocessor": str(paths.preprocessor),
        }
        python_model = PYFUNC_MODELS[config.data.kind]()
        example = _pyfunc_example(config, paths)
        python_model.load(artifacts)
        output = python_model.predict(None, example)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=python_model,
            artifacts=artifacts,
            signature=_pyfunc_signature(config, example, output),
            input_example=example,
            registered_model_name=config.name,
            pip_requirements=pip_requirements(),
        )


def _pyfunc_signature(config: ExperimentConfig, example: pd.DataFrame, output: pd.DataFrame):
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    if config.data.kind != "images":
        return infer_signature(example, output)
    # Inferred from arrays, `image` would be Array(Array(float)): MLflow's schema check would
    # then refuse uint8 or float64 pixels, nested lists (what a JSON request or the saved
    # example turns arrays into) and file paths. `Any` lets every form through to `predict`,
    # which checks each cell itself. Optional, so that a frame without `image` reaches
    # `predict` too and fails with the same ValueError a direct call gives.
    inputs = Schema([ColSpec(AnyType(), IMAGE_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=infer_signature(model_output=output).outputs)


def _pyfunc_example(config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
    """A few rows of the test split, raw: exactly what a user of the registered model sends."""
    if config.data.kind == "images":
        from lamina.data.image_parquet import pixels_from_arrow
        from lamina.data.parquet_files import read_parquet

        test = read_parquet(paths.splits / "test.parquet", written_by="prepare").slice(0, 4)
        pixels = pixels_from_arrow(test.column("image"), config.data.image_shape)
        return pd.DataFrame({IMAGE_COLUMN: list(pixels)})
    if config.data.kind == "text":
        from lamina.data.text_table import read_text_split

        texts, _ = read_text_split(paths.splits / "test.parquet")
        return pd.DataFrame({"text": [str(text) for text in texts[:4]]})
    from lamina.data.series_table import read_series_split

    _, values = read_series_split(paths.splits / "test.parquet")
    return pd.DataFrame({"value": np.asarray(values[: config.preprocess.window], dtype=float)})


class _ArtifactModel:
    """Loads weights, config and preprocessor from the artifacts MLflow hands back."""

    def load(self, artifacts: dict[str, str]) -> None:
        from lamina.features.preprocess import load_preprocessor
        from lamina.models import build_model

        self.config = load_resolved_config(Path(artifacts["config"]))
        self.preprocessor = load_preprocessor(self.config, Path(artifacts["preprocessor"]))
        vocab_size = len(self.preprocessor.tokens) if self.config.data.kind == "text" else None
        self.network = build_model(self.config, vocab_size)
        self.network.load_state_dict(torch.load(artifacts["weights"], weights_only=True))
        self.network.eval()

    def load_context(self, context) -> None:
        self.load(context.artifacts)


class TextClassifierModel(_ArtifactModel, PythonModel):
    """Raw text in (`text` column), class name and probabilities out."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = model_input["text"].fillna("").astype(str).tolist()
        tokens = torch.as_tensor(self.preprocessor.encode(texts, self.config.preprocess.max_length))
        with torch.no_grad():
            probabilities = torch.softmax(self.network(tokens), dim=1).numpy()
        return _class_table(probabilities, self.config.data.class_names)


class ImageClassifierModel(_ArtifactModel, PythonModel):
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
        return _class_table(probabilities, self.config.data.class_names)


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


def _class_table(probabilities: np.ndarray, names: list[str]) -> pd.DataFrame:
    """`prediction` (the most probable class name) and `probability_<class>`, in class order."""
    result = pd.DataFrame({"prediction": np.asarray(names)[probabilities.argmax(axis=1)]})
    for index, name in enumerate(names):
        result[f"probability_{name}"] = probabilities[:, index]
    return result


class ForecasterModel(_ArtifactModel, PythonModel):
    """Raw history in (`value` column, oldest first), the next `horizon` values out."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        window = self.config.preprocess.window
        history = model_input["value"].to_numpy(dtype=np.float64)
        if len(history) < window:
            raise ValueError(f"need at least {window} values of history, got {len(history)}")
        scaled = self.preprocessor.transform(history[-window:]).astype(np.float32)
        with torch.no_grad():
            forecast = self.network(torch.from_numpy(scaled).reshape(1, window, 1)).numpy()
        values = self.preprocessor.inverse_transform(forecast)[0]
        return pd.DataFrame({"forecast": values})  # one row per step ahead


PYFUNC_MODELS = {
    "images": ImageClassifierModel,
    "text": TextClassifierModel,
    "series": ForecasterModel,
}


def sample_generator(uri: str, count: int, seed: int) -> np.ndarray:
    """`count` images (N, H, W) as uint8 pixels from the generator logged at `uri` (a model
    taking noise (B, latent_dim)); the same `seed` gives the same images."""
    import mlflow.pyfunc

    from lamina.errors import TrackingError

    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    shape = schema.inputs[0].shape if schema is not None and schema.is_tensor_spec() else None
    if shape is None or len(shape) != 2:
        raise TrackingError(
            f"{uri} is not a generator: it takes {schema}, not noise (B, latent_dim); "
            "`lamina generate` takes a GAN such as gan-mnist"
        )
    noise = np.random.default_rng(seed).standard_normal((count, shape[1])).astype(np.float32)
    pixels = np.asarray(model.predict(noise))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(count, *pixels.shape[-2:])
