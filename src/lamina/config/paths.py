"""Where each stage of an experiment reads and writes, relative to the repository root.

`dvc.yaml` declares the same paths; this is the one place the Python side spells them.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import ConfigError

CONF_DIR = Path("conf")
OUTPUTS_DIR = Path("outputs")

# Experiment names and `defaults` options become file and folder names: no separators and no
# leading dot, so none can point outside conf/ or outputs/ (`../x`, `/etc/x`).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def plain_name_problem(name: object) -> str | None:
    """Why `name` cannot be an experiment or option name, or None if it can."""
    if isinstance(name, str) and _PLAIN_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a plain name (letters, digits, '_', '-', '.', not starting with '.'; "
        "no '/')"
    )


def check_experiment_name(name: object) -> None:
    problem = plain_name_problem(name)
    if problem:
        raise ConfigError(
            f"experiment name: {problem}; name a preset of {CONF_DIR / 'experiment'} "
            "without its .yaml"
        )


@dataclass(frozen=True)
class ExperimentPaths:
    name: str
    root: Path = Path(".")

    def __post_init__(self) -> None:
        check_experiment_name(self.name)

    def check_writable(self) -> None:
        """Fail now, not after Ray has started, when the experiment's output folder cannot be
        written: a file in its place, a read-only folder or file system. Writes nothing: a
        temporary file in the nearest existing folder, gone when closed."""
        existing = next(path for path in (self.base, *self.base.parents) if path.exists())
        if not existing.is_dir():
            raise ConfigError(
                f"{existing}: a file where the folder for the outputs of {self.name} must be; "
                "move it away"
            )
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            raise ConfigError(
                f"{existing}: cannot write the outputs of {self.name} there "
                f"({exc.strerror or exc}); make it writable"
            ) from None

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
