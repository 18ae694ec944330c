"""Shared fixtures: the real config shrunk to tiny settings, real MNIST digits, a local Ray.

Tests run the real code paths (Ray Data, Ray Train, MLflow, DVC) on small data instead of
mocking them, as lightning-hydra-template's conftest does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from lamina.config.compose import compose_experiment
from lamina.config.schema import ExperimentConfig
from lamina.data.image_arrays import read_image_arrays
from lamina.data.raw_sources import build_mnist_5k

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def pipeline_vars() -> dict:
    """`dvc.yaml`'s vars (`experiments` with their kind of data, `supervised`, `generative`):
    tests read the experiment list here instead of keeping a copy that drifts."""
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    return {key: value for entry in dvc["vars"] for key, value in entry.items()}


class TensorBatches:
    """Fixed tensors served as Ray Data's `iter_torch_batches` serves a materialized shard:
    in order, pinned when asked, copied to `device`. For the loops' epoch functions outside
    Ray Train."""

    def __init__(self, columns: dict):
        self.columns = columns

    def iter_torch_batches(self, *, batch_size, device, pin_memory=False, **_shuffle):
        rows = len(next(iter(self.columns.values())))
        for start in range(0, rows, batch_size):
            batch = {key: value[start : start + batch_size] for key, value in self.columns.items()}
            if pin_memory:
                batch = {key: value.pin_memory() for key, value in batch.items()}
            yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def shrink(config: ExperimentConfig, data_path: Path, **train: object) -> ExperimentConfig:
    """The preset as it is, on few samples, for one or two quick epochs."""
    tiny = {
        "data": config.data.model_copy(update={"path": str(data_path), "max_samples": 400}),
        "train": config.train.model_copy(update={"epochs": 1, **train}),
    }
    return config.model_copy(update=tiny)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """Real MNIST digits built from the package, independent of the repo's data/ state."""
    folder = tmp_path_factory.mktemp("raw") / "mnist"
    build_mnist_5k(folder)
    return folder


@pytest.fixture(scope="session")
def cnn_config() -> ExperimentConfig:
    return compose_experiment("cnn-mnist", CONF_DIR)


@pytest.fixture(scope="session")
def mnist_arrays(cnn_config, mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    data = cnn_config.data.model_copy(update={"path": str(mnist_dir)})
    return read_image_arrays(data)


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray for a module's tests (2 CPUs, a small object store).

    Per module, not per session: it must be gone before the pipeline tests, whose stages start
    Ray of their own. With two local Rays on one machine, Ray's State API cannot tell which one
    to ask, and Ray Train then cannot free the CPUs of a trial that ASHA stopped.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, like the Makefile."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=venv_env(**extra_env), capture_output=True, text=True)


@contextlib.contextmanager
def process_group(
    cmd: list[str], cwd: Path, log_path: Path, **extra_env: str
) -> Iterator[subprocess.Popen]:
    """`cmd` started in a process group of its own, output to `log_path`; on leaving, whatever
    of the group still runs (a stage and the Ray it started) is SIGKILLed by the group's id."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=venv_env(**extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):  # none of the group is left
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def clone_worktree(destination: Path) -> None:
    """Tracked and untracked-but-not-ignored files: what a commit of this tree would hold."""
    import shutil

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for relative in filter(None, listed):
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=ci@lamina", "-c", "user.name=ci", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )
