"""The one interface every kind of data implements (`images`, `text`, `series`).

Whatever differs between kinds of data is answered here, by the kind's own module, and nowhere
else: the preprocess stage's fit and features, the supervised task's feature columns, test-split
evaluation, the registered model's raw input and output, and `lamina predict`'s reader. A new
kind is one module implementing `DataKind`, registered in `lamina.features.DATA_KINDS`, plus its
config class in `lamina.config.schema` (which declares the preprocessing and models that apply
to it and its task) and a `conf/data/` file.

Heavy libraries (ray, torch, mlflow) are imported inside the methods that need them, so asking a
kind for its columns costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from torch import nn

    from lamina.config.paths import ExperimentPaths
    from lamina.config.schema import ExperimentConfig
    from lamina.evaluation.evaluate import Evaluation
    from lamina.serving.packaging import ArtifactModel
    from lamina.serving.predict import BatchPredictor, PredictInput


class Preprocessor(Protocol):
    """What `preprocess` fitted on the training split; saved as `preprocessor.json`."""

    def save(self, path: Path) -> None: ...


class DataKind(ABC):
    name: ClassVar[str]  # `data.kind` in the config
    preprocessor_class: ClassVar[Any]  # has `load(path)`; what `preprocess_splits` returns
    # Feature columns the preprocess stage writes: what a model reads, and what it predicts.
    input_column: ClassVar[str]
    target_column: ClassVar[str]
    # The column of the registered model's raw input; `lamina predict` tells kinds apart by it.
    raw_input_column: ClassVar[str]

    # --- the preprocess stage ---------------------------------------------------------------

    @abstractmethod
    def preprocess_splits(
        self, config: ExperimentConfig, splits_dir: Path, features_dir: Path
    ) -> Preprocessor:
        """Fit on `splits_dir/train.parquet`, write `features_dir/{train,val,test}/` (Parquet)."""

    def load_preprocessor(self, path: Path) -> Preprocessor:
        from lamina.errors import DataError

        if not path.is_file():
            raise DataError(f"{path}: fitted preprocessor not found; run the `preprocess` stage")
        return self.preprocessor_class.load(path)

    @abstractmethod
    def read_features(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        """(model inputs, targets) of one preprocessed split, as numpy arrays."""

    def vocabulary(self, preprocessor_path: Path) -> list[str] | None:
        """The tokens fitted on train, by id, which size a model and may pick its pretrained
        vectors; None for kinds whose models need nothing fitted to be built."""
        return None

    # --- after training ---------------------------------------------------------------------

    @abstractmethod
    def evaluate(
        self, config: ExperimentConfig, model: nn.Module, paths: ExperimentPaths, plots_dir: Path
    ) -> Evaluation:
        """Test-split metrics (beside the kind's baselines), predictions, and PNG plots."""

    # --- the registered model: raw input in, preprocessing inside ---------------------------

    @abstractmethod
    def pyfunc_model(self) -> ArtifactModel:
        """An unloaded pyfunc model; `load(artifacts)` gives it weights, config, preprocessor."""

    @abstractmethod
    def pyfunc_example(self, config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
        """A few raw test rows: exactly what a user of the registered model sends."""

    def pyfunc_signature(self, example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
        from mlflow.models import infer_signature

        return infer_signature(example, output)

    # --- `lamina predict` over a registered model of this kind ------------------------------

    @abstractmethod
    def read_predict_input(
        self, input_path: Path, logged_config: Callable[[], ExperimentConfig]
    ) -> PredictInput:
        """The rows to predict from the user's file or folder; every mistake a `DataError`.
        `logged_config()` fetches the config the model was trained with, for kinds that need
        it to read their input."""

    @abstractmethod
    def batch_predictor(self) -> type[BatchPredictor]:
        """The class each Ray actor holds to predict batches of `read_predict_input`'s rows."""

    # --- explanations: the methods that say why a model predicted what it did (saliency maps,
    # token attributions, ...) go here, one per kind, when Lamina adds them.
