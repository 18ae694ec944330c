"""What each kind of experiment registers: a model that takes raw input, preprocessing inside.

- classifiers and forecasters: a pyfunc model holding weights, config and the fitted
  preprocessor (`ArtifactModel`); its class, raw input example and signature come from the kind
  of data (`lamina.features.<kind>_serving`): images in an `image` column (an (H, W) array of
  pixel values in [0, 255], or a PNG/JPEG file path), texts in `text`, a forecaster's recent
  history in `value`. Classifiers output `prediction` (class name) and one
  `probability_<class>` column per class (`class_table`), forecasters the next `horizon` values.
- GAN generators: a torch module; input noise (B, latent_dim), output pixels (B, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina.config.compose import dump_config, load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig

MODEL_NAME_IN_RUN = "model"


# What a registered model imports when it is loaded and predicts, as distributions (MLflow adds
# itself). A pyfunc model: what the Lamina code it carries imports (`lamina_code`; Pillow reads
# image files) and cloudpickle, which MLflow unpickles the model with. A generator, a traced
# graph: torch and cloudpickle, as MLflow's pytorch flavor lists them.
PYFUNC_DISTRIBUTIONS = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "PyYAML",
    "pillow",
    "cloudpickle",
)
GENERATOR_DISTRIBUTIONS = ("torch", "cloudpickle")


def pip_requirements(distributions: Sequence[str]) -> list[str]:
    """`distributions` pinned to the versions installed here. Explicit, so the CPU torch build
    stays and MLflow's slow inference is skipped; Lamina itself is no requirement (no index
    serves it): a pyfunc model carries its code (`lamina_code`)."""
    from importlib.metadata import version

    # torch's local label (`+cpu`) names a build no index serves; `==2.13.0` still matches it.
    return [f"{name}=={version(name).split('+')[0]}" for name in distributions]


def lamina_code() -> list[str]:
    """The Lamina package folder, as MLflow's `code_paths`: the model carries the code that
    loads it (MLflow puts it on `sys.path` first at load time), so it loads without Lamina
    installed. Only the modules the loading path imports run; none imports Ray or DVC."""
    import lamina

    return [str(Path(lamina.__file__).parent)]


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
        pip_requirements=pip_requirements(GENERATOR_DISTRIBUTIONS),
        # A graph traced by torch.export, not a pickle: loading needs no Lamina class. Named,
        # because MLflow's default turns to pickle under a Databricks tracking URI.
        serialization_format="pt2",
    )


def _noise_example(config: ExperimentConfig) -> np.ndarray:
    generator = torch.Generator().manual_seed(config.train.seed)
    return torch.randn(4, config.model.latent_dim, generator=generator).numpy()


def _log_pyfunc(config: ExperimentConfig, paths: ExperimentPaths, model: nn.Module):
    import tempfile

    import mlflow.pyfunc

    from lamina.features import kind_for

    kind = kind_for(config)
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
        python_model = kind.pyfunc_model()
        example = kind.pyfunc_example(config, paths)
        python_model.load(artifacts)
        output = python_model.predict(None, example)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=python_model,
            artifacts=artifacts,
            signature=kind.pyfunc_signature(example, output),
            input_example=example,
            registered_model_name=config.name,
            pip_requirements=pip_requirements(PYFUNC_DISTRIBUTIONS),
            code_paths=lamina_code(),
        )


class ArtifactModel:
    """Loads weights, config and preprocessor from the artifacts MLflow hands back; each kind's
    pyfunc model adds `predict`."""

    def load(self, artifacts: dict[str, str]) -> None:
        from lamina.features import kind_for
        from lamina.models import build_model

        self.config = load_resolved_config(Path(artifacts["config"]))
        kind, preprocessor_path = kind_for(self.config), Path(artifacts["preprocessor"])
        self.preprocessor = kind.load_preprocessor(preprocessor_path)
        vocabulary = kind.vocabulary(preprocessor_path)
        self.network = build_model(self.config, None if vocabulary is None else len(vocabulary))
        self.network.load_state_dict(torch.load(artifacts["weights"], weights_only=True))
        self.network.eval()

    def load_context(self, context) -> None:
        self.load(context.artifacts)


def class_table(probabilities: np.ndarray, names: list[str]) -> pd.DataFrame:
    """`prediction` (the most probable class name) and `probability_<class>`, in class order."""
    result = pd.DataFrame({"prediction": np.asarray(names)[probabilities.argmax(axis=1)]})
    for index, name in enumerate(names):
        result[f"probability_{name}"] = probabilities[:, index]
    return result


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
