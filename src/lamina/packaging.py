"""What each kind of experiment registers: a model that takes raw input, preprocessing inside.

- image classifiers: a torch module with the fitted pixel scaler as buffers (`mlflow.pytorch`);
  input raw pixels (B, H, W) in [0, 255], output class probabilities.
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

from lamina.config import ExperimentConfig, dump_config, load_resolved_config
from lamina.paths import ExperimentPaths

MODEL_NAME_IN_RUN = "model"


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
        elif config.data.kind == "images":
            from lamina.images import ImageStandardizer
            from lamina.models.raw_input import RawImageClassifier

            scale = ImageStandardizer.load(paths.preprocessor)
            wrapped = RawImageClassifier(model, scale.pixel_mean, scale.pixel_std).eval()
            info = _log_torch(config, wrapped, _raw_pixels_example(config, paths))
        else:
            info = _log_pyfunc(config, paths, model)
    return int(info.registered_model_version)


def _uri(paths: ExperimentPaths) -> str:
    from lamina.tracking import tracking_uri

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


def _raw_pixels_example(config: ExperimentConfig, paths: ExperimentPaths) -> np.ndarray:
    """Raw test pixels: exactly what a user of the registered model sends."""
    import pyarrow.parquet as pq

    from lamina.data.image_parquet import pixels_from_arrow

    test = pq.read_table(paths.splits / "test.parquet").slice(0, 4)
    return pixels_from_arrow(test.column("image"), config.data.image_shape).astype(np.float32)


def _noise_example(config: ExperimentConfig) -> np.ndarray:
    generator = torch.Generator().manual_seed(config.train.seed)
    return torch.randn(4, config.model.latent_dim, generator=generator).numpy()


def _log_pyfunc(config: ExperimentConfig, paths: ExperimentPaths, model: nn.Module):
    import tempfile

    import mlflow.pyfunc
    from mlflow.models import infer_signature

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
        python_model = TextClassifierModel() if config.data.kind == "text" else ForecasterModel()
        example = _pyfunc_example(config, paths)
        python_model.load(artifacts)
        output = python_model.predict(None, example)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=python_model,
            artifacts=artifacts,
            signature=infer_signature(example, output),
            input_example=example,
            registered_model_name=config.name,
            pip_requirements=pip_requirements(),
        )


def _pyfunc_example(config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
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
        from lamina.models import build_model
        from lamina.preprocess import load_preprocessor

        self.config = load_resolved_config(Path(artifacts["config"]))
        self.preprocessor = load_preprocessor(self.config, Path(artifacts["preprocessor"]))
        vocab_size = len(self.preprocessor.tokens) if self.config.data.kind == "text" else None
        self.network = build_model(self.config, vocab_size)
        self.network.load_state_dict(torch.load(artifacts["weights"], weights_only=True))
        self.network.eval()

    def load_context(self, context) -> None:
        self.load(context.artifacts)


try:
    from mlflow.pyfunc import PythonModel
except (
    ImportError
):  # pragma: no cover - mlflow is a dependency; keeps imports cheap to reason about
    PythonModel = object


class TextClassifierModel(_ArtifactModel, PythonModel):
    """Raw text in (`text` column), class name and probabilities out."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = model_input["text"].fillna("").astype(str).tolist()
        tokens = torch.as_tensor(self.preprocessor.encode(texts, self.config.preprocess.max_length))
        with torch.no_grad():
            probabilities = torch.softmax(self.network(tokens), dim=1).numpy()
        names = self.config.data.class_names
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
