"""What each kind of experiment registers: a model that takes raw input, preprocessing inside.

- classifiers and forecasters: a pyfunc model logged from code (`MODEL_CODE`, nothing pickled)
  holding weights, config and the fitted preprocessor as plain files (`RawInputModel`); its
  class, raw input example and signature come from the kind of data
  (`lamina.features.<kind>_serving`): images in an `image` column (an (H, W) array of pixel
  values in [0, 255], or a PNG/JPEG file path), texts in `text`, a forecaster's recent history
  in `value`. Classifiers output `prediction` (class name) and one
  `probability_<class>` column per class (`class_table`), forecasters the next `horizon` values.
- GAN generators: a torch module; input noise (B, latent_dim), output pixels (B, 1, H, W).

What loading still trusts: docs/registry-and-inference.md, "What a registered model trusts".
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from lamina.config.compose import dump_config, load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.redaction import redacted

MODEL_NAME_IN_RUN = "model"
# The code of every pyfunc model (MLflow's models from code): saved into the model as
# `model_code.py`, which MLflow runs to build the model when it loads it, instead of unpickling
# a `python_model.pkl`. Kept here, not in a module of its own: the register stage's DVC deps
# are the modules it imports, and this code is part of what it registers.
MODEL_CODE = """\
from mlflow.models import set_model

from lamina.serving.packaging import RawInputModel

set_model(RawInputModel())
"""


# What a registered model imports when it is loaded and predicts, as distributions (MLflow adds
# itself). A pyfunc model: what the Lamina code it carries imports (`lamina_code`; Pillow reads
# image files); logged from code, it unpickles nothing. A generator, a traced graph: torch and
# cloudpickle, as MLflow's pytorch flavor lists them.
PYFUNC_DISTRIBUTIONS = ("torch", "numpy", "pandas", "pyarrow", "pydantic", "PyYAML", "pillow")
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
    """Log the raw-input form of `model` into the training run and register it, with the
    SHA-256 of its files; its version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lamina.serving.registry import record_model_files

    mlflow.set_tracking_uri(_uri(paths))
    with mlflow.start_run(run_id=run_id):
        if config.task == "generation":
            info = _log_torch(config, GeneratedPixels(model).eval(), _noise_example(config))
        else:
            info = _log_pyfunc(config, paths, model)
    version = str(info.registered_model_version)
    record_model_files(MlflowClient(_uri(paths)), config.name, version)
    return int(version)


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
        config_file.write_text(redacted(dump_config(config)))  # passwords masked
        model_code = Path(staging) / "model_code.py"
        model_code.write_text(MODEL_CODE)
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
            # A source file, not an instance: MLflow would cloudpickle an instance, and replacing
            # that pickle in the artifact store would run any code on the next load.
            python_model=str(model_code),
            artifacts=artifacts,
            signature=kind.pyfunc_signature(example, output),
            input_example=example,
            registered_model_name=config.name,
            pip_requirements=pip_requirements(PYFUNC_DISTRIBUTIONS),
            code_paths=lamina_code(),
        )


class ArtifactModel(ABC):
    """Loads weights, config and preprocessor from the artifacts MLflow hands back; each kind's
    model (`DataKind.pyfunc_model`) adds `predict`."""

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

    @abstractmethod
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Raw input rows in, the kind's output table out."""


class RawInputModel(PythonModel):
    """What `MODEL_CODE` hands MLflow: the model of the kind of data its logged config names,
    loaded from the model's artifacts; one entry for every kind, each kind's model in its home."""

    def load_context(self, context) -> None:
        from lamina.features import kind_for

        config = load_resolved_config(Path(context.artifacts["config"]))
        self.model = kind_for(config).pyfunc_model()
        self.model.load(context.artifacts)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict(context, model_input, params)


def class_table(probabilities: np.ndarray, names: list[str]) -> pd.DataFrame:
    """`prediction` (the most probable class name) and `probability_<class>`, in class order."""
    result = pd.DataFrame({"prediction": np.asarray(names)[probabilities.argmax(axis=1)]})
    for index, name in enumerate(names):
        result[f"probability_{name}"] = probabilities[:, index]
    return result


def load_registered_model(uri: str):
    """The pyfunc model of the registered version `uri` (`models:/NAME/VERSION`, in the registry
    MLflow is set to), loaded only once its files match the SHA-256 the registry recorded."""
    import tempfile

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from lamina.serving.registry import download_checked_model

    name, _, version = uri.removeprefix("models:/").rpartition("/")
    # Kept for the process's life, as MLflow keeps what it downloads itself: the model's code
    # must stay importable while it predicts.
    folder = Path(tempfile.mkdtemp(prefix="lamina-model-"))
    return mlflow.pyfunc.load_model(
        str(download_checked_model(MlflowClient(), name, version, folder))
    )


def sample_generator(uri: str, count: int, seed: int) -> np.ndarray:
    """`count` images (N, H, W) as uint8 pixels from the generator registered as `uri` (a model
    taking noise (B, latent_dim)); the same `seed` gives the same images."""
    import mlflow.models

    from lamina.errors import TrackingError

    # Told apart by its metadata alone: a model that is not a generator is never loaded.
    signature = mlflow.models.get_model_info(uri).signature
    schema = signature.inputs if signature is not None else None
    shape = schema.inputs[0].shape if schema is not None and schema.is_tensor_spec() else None
    if shape is None or len(shape) != 2:
        raise TrackingError(
            f"{uri} is not a generator: it takes {schema}, not noise (B, latent_dim); "
            "`lamina generate` takes a GAN such as gan-mnist"
        )
    with _pickle_refused():
        model = load_registered_model(uri)
    noise = np.random.default_rng(seed).standard_normal((count, shape[1])).astype(np.float32)
    pixels = np.asarray(model.predict(noise))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(count, *pixels.shape[-2:])


def _pickle_refused():
    """MLflow refuses to unpickle while loading: `torch.export.load` unpickles a pt2 archive's
    weights unrestricted, so MLflow first checks that each record is plain data or tensors that
    torch's `weights_only` unpickler accepts, and fails on anything else."""
    from unittest import mock

    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

    return mock.patch.dict(os.environ, {MLFLOW_ALLOW_PICKLE_DESERIALIZATION.name: "false"})
