"""Resuming an interrupted `train` stage from its last checkpoint.

A fit is named after everything it depends on (the config it trains with, the features, the
vocabulary size, the code the `train` stage runs): the same inputs give the same name, and Ray
Train, given a name whose folder already holds checkpoints, resumes from the latest one. A small
marker beside that folder keeps the fit's MLflow run id, so the resumed fit logs into the same
run instead of opening a second one. Both go once the fit has finished; a fit whose inputs
changed gets another name and starts from scratch, and the leftovers of the old one are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from lamina.code_closure import PACKAGE, PACKAGE_DIR, code_closure
from lamina.config.schema import ExperimentConfig

logger = logging.getLogger("lamina.train")

MARKER_SUFFIX = ".mlflow-run.json"
FINGERPRINT_LENGTH = 16
HEX_DIGITS = "0123456789abcdef"
# The checkout Lamina runs from (installed editable, as `make setup` installs it): the stage
# scripts in pipelines/, the package in src/.
CHECKOUT = PACKAGE_DIR.parents[1]


@dataclass(frozen=True)
class ResumableFit:
    """The Ray Train run name of a fit, and the marker that ties it to its MLflow run."""

    run_name: str
    marker: Path  # <local state folder>/<run_name>.mlflow-run.json

    def saved_run_id(self) -> str | None:
        if not self.marker.is_file():
            return None
        try:
            return json.loads(self.marker.read_text())["mlflow_run_id"]
        except (ValueError, KeyError, TypeError):
            return None  # a marker cut short by a kill: start over

    def save_run_id(self, run_id: str) -> None:
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        staging = self.marker.with_name(self.marker.name + ".tmp")
        staging.write_text(json.dumps({"mlflow_run_id": run_id}) + "\n")
        staging.replace(self.marker)

    def forget(self) -> None:
        self.marker.unlink(missing_ok=True)


def resumable_fit(
    config: ExperimentConfig, inputs: list[Path], vocab_size: int | None, state_folder: Path
) -> ResumableFit:
    """The fit for these inputs; `state_folder` is the local folder that holds the markers."""
    name = f"{config.name}-{fingerprint(config, inputs, vocab_size)}"
    return ResumableFit(run_name=name, marker=state_folder / f"{name}{MARKER_SUFFIX}")


def fingerprint(config: ExperimentConfig, inputs: list[Path], vocab_size: int | None) -> str:
    """A digest of what a fit's result depends on: the config (tuned values applied), the
    contents of the input files and folders, the vocabulary size, and the code the `train`
    stage runs (a code fix must not resume checkpoints the old code wrote)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(f"vocab_size={vocab_size}".encode())
    # Each file named relative to its base folder: the same fit resumes in another checkout.
    named = [(path, root.parent) for root in inputs for path in _files(root)]
    named += [(path, CHECKOUT) for path in train_code(CHECKOUT)]
    for path, base in named:
        digest.update(str(path.relative_to(base)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def train_code(checkout: Path) -> list[Path]:
    """The `train` stage's script and every Lamina file it imports: what dvc.yaml lists as
    the stage's code deps (tests/code/test_dvc_code_deps.py holds the two together)."""
    script = checkout / "pipelines" / "train.py"
    return [script, *code_closure(script, checkout / "src" / PACKAGE)]


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def discard_other_fits(experiment: str, keep: str, state_folder: Path, storage: str) -> None:
    """Remove the markers of this experiment's other interrupted fits, and their checkpoint
    folders where they are local: their inputs changed, so they can never be resumed."""
    if not state_folder.is_dir():
        return
    for marker in state_folder.glob(f"{experiment}-*{MARKER_SUFFIX}"):
        name = marker.name.removesuffix(MARKER_SUFFIX)
        suffix = name.removeprefix(f"{experiment}-")
        is_fingerprint = len(suffix) == FINGERPRINT_LENGTH and set(suffix) <= set(HEX_DIGITS)
        if name == keep or not is_fingerprint:
            continue  # another experiment whose name starts like this one's
        marker.unlink(missing_ok=True)
        folder = Path(storage) / name
        if "://" not in storage and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        logger.info("discarded the checkpoints of an interrupted fit with other inputs: %s", name)


def discard_unmarked_checkpoints(fit: ResumableFit, storage: str) -> None:
    """A checkpoint folder without its marker belongs to no MLflow run: resuming it would log
    into a new run from the middle of training, so it is removed and the fit starts over."""
    folder = Path(storage) / fit.run_name
    if "://" not in storage and folder.is_dir() and fit.saved_run_id() is None:
        shutil.rmtree(folder, ignore_errors=True)
