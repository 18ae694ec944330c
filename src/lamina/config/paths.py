"""Where each stage of an experiment reads and writes, relative to the repository root.

`dvc.yaml` declares the same paths; this is the one place the Python side spells them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONF_DIR = Path("conf")
OUTPUTS_DIR = Path("outputs")


@dataclass(frozen=True)
class ExperimentPaths:
    name: str
    root: Path = Path(".")

    @property
    def base(self) -> Path:
        return self.root / OUTPUTS_DIR / self.name

    # configure
    @property
    def config(self) -> Path:
        return self.base / "config.yaml"

    # prepare: train/val/test Parquet files
    @property
    def splits(self) -> Path:
        return self.base / "splits"

    # preprocess: one Parquet directory per split, plus the fitted preprocessor
    @property
    def features(self) -> Path:
        return self.base / "features"

    @property
    def preprocessor(self) -> Path:
        return self.base / "preprocessor.json"

    # tune: the best trial's params (what `train` applies), the trials table and its plots
    @property
    def best_params(self) -> Path:
        return self.base / "best_params.yaml"

    @property
    def tune_dir(self) -> Path:
        return self.base / "tune"

    # train: best weights and the config they were trained with (tuned values applied),
    # per-epoch history, the MLflow run that holds it all
    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def model_weights(self) -> Path:
        return self.model_dir / "model.pt"

    @property
    def trained_config(self) -> Path:
        return self.model_dir / "config.yaml"

    @property
    def history(self) -> Path:
        return self.base / "history.csv"

    @property
    def run_info(self) -> Path:
        return self.base / "run.json"

    # evaluate
    @property
    def metrics(self) -> Path:
        return self.base / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.base / "predictions.csv"

    @property
    def plots(self) -> Path:
        return self.base / "plots"

    # register
    @property
    def registration(self) -> Path:
        return self.base / "registration.json"

    # Ray Train's own run folders (checkpoints); not a DVC output.
    @property
    def ray_storage(self) -> Path:
        return (self.root / ".lamina" / "ray").resolve()

    # Ray Tune's search state, kept until the `tune` stage finishes (for resuming); not DVC's.
    @property
    def tune_state(self) -> Path:
        return (self.root / ".lamina" / "tune" / self.name).resolve()
