"""The per-worker skeleton every training loop runs under Ray Train (Train V2 pattern).

A recipe: seed -> build (the step) -> restore from `ray.train.get_checkpoint()` after a failure
-> for each epoch: train (the step), then a checkpoint that rank 0 writes and every rank
reports, and the epoch's metrics logged by rank 0 into the MLflow run the driver opened, so the
run fills in while training goes on. What differs between a supervised model and a GAN (the
modules, optimizers, one epoch's work, what the checkpoint holds, when to stop) is the step's:
`loop.SupervisedStep`, `adversarial.AdversarialStep`.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from lamina.config.schema import ExperimentConfig
from lamina.tracking.training_runs import EPOCH_SECONDS, TrackedRun
from lamina.training.context import TrainingRunContext

CHECKPOINT_FILE = "checkpoint.pt"

logger = logging.getLogger("lamina.train")


@dataclass(frozen=True)
class Worker:
    """Where a step runs: this worker's rank and device, and its own random generator (data
    order, augmentation or noise), which differs per rank and is kept in the checkpoint."""

    rank: int
    device: torch.device
    rng: torch.Generator


class EpochStep(Protocol):
    """One kind of training, as `run_epochs` drives it. Built on every worker once the global
    generators are seeded, so every rank starts from the same weights."""

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; its metrics, the same on every rank."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the epoch and the random states; its `model` is
        what the driver keeps as the trained weights."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def log_epoch_artifacts(self, run: TrackedRun, epoch: int) -> None:
        """Rank 0 only, once per epoch, after the epoch's metrics."""
        ...

    def stop_reason(self) -> str | None:
        """Why training ends before `train.epochs` (the same on every rank, so none is left
        waiting in a collective); None to go on."""
        ...


def run_epochs(
    context: TrainingRunContext, build_step: Callable[[TrainingRunContext, Worker], EpochStep]
) -> None:
    import ray.train
    import ray.train.torch

    quiet_ray_train_reports()
    config = context.experiment
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    seed_everything(config)
    worker = Worker(rank, device, torch.Generator().manual_seed(config.train.seed * 1000 + rank))
    step = build_step(context, worker)
    start_epoch = 0
    # A restart (from a checkpoint or, if none was saved yet, from scratch) trains again the
    # epochs after its checkpoint; those the run already holds are not logged twice.
    already_logged = context.run.logged_epochs() if rank == 0 else set()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: continue where the run left off
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
        step.load_state_dict(state)
        restore_rng_state(state["rng_states"][rank], worker.rng, device)
        start_epoch = state["epoch"] + 1

    for epoch in range(start_epoch, config.train.epochs):
        started = time.perf_counter()
        metrics = step.train_epoch(epoch)
        metrics[EPOCH_SECONDS] = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            rng_states = gather_rng_states(worker.rng, device)
            if rank == 0:
                saved = {
                    "epoch": epoch,
                    **step.state_dict(),
                    "rng_states": rng_states,
                    "mlflow_run_id": context.run.run_id,
                }
                torch.save(saved, Path(folder) / CHECKPOINT_FILE)
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
                if epoch not in already_logged:
                    context.run.log_epoch(metrics, epoch)
                    step.log_epoch_artifacts(context.run, epoch)
                logger.info(progress_line(epoch, config.train.epochs, metrics, context.label))
            ray.train.report({"epoch": epoch, **metrics}, checkpoint=report_checkpoint)
        reason = step.stop_reason()
        if reason is not None:
            if rank == 0:
                logger.info(reason)
            break


def seed_everything(config: ExperimentConfig) -> None:
    """The same start on every rank and every run: Python's, NumPy's and torch's global
    generators (data order and augmentation draw from generators of their own, seeded from
    the same seed and kept in the checkpoint). `train.deterministic` also rules out the GPU
    kernels whose results vary from run to run (atomics in cuDNN and cuBLAS)."""
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if config.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def gather_rng_states(generator: torch.Generator, device: torch.device) -> list[dict]:
    """Every rank's random state, for rank 0's checkpoint: the worker's own generator and
    torch's global one (dropout; CUDA's too on a GPU), so a restart draws exactly what the
    lost epochs would have drawn."""
    state = {"own": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def restore_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["own"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_dataset_name(rank: int) -> str:
    """The dataset of one worker's rows of `train`, when the driver cut the split per rank
    (`driver.TrainingData`)."""
    return f"train_rank_{rank}"


def training_shard(split_by_ray: bool, rank: int):
    """This worker's part of the training split: its share of Ray Train's streaming split, or
    the dataset the driver cut for its rank."""
    import ray.train

    if split_by_ray:
        return ray.train.get_dataset_shard("train")
    return ray.train.get_dataset_shard(train_dataset_name(rank))


def autocast(config: ExperimentConfig, device: torch.device):
    """bf16 autocast when `cluster.precision` asks for it, a no-op otherwise. Losses and
    reductions stay fp32 under it (autocast's own op list), so no loss scaling is needed."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.cluster.precision == "bf16"
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO; our per-epoch line says the same thing once.

    Ray 2.60 names that logger after its file path, so `LoggingConfig(log_level=...)`, which
    filters `ray.train.*` names only, does not reach it.
    """
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def progress_line(
    epoch: int, epochs: int, metrics: dict[str, float], label: str | None = None
) -> str:
    """One line per epoch; `label` tells concurrent runs (Tune trials) apart."""
    shown = "  ".join(
        f"{key} {value:.4f}" for key, value in metrics.items() if key != EPOCH_SECONDS
    )
    prefix = f"{label}: " if label else ""
    return f"{prefix}epoch {epoch + 1}/{epochs}  {shown}  ({metrics[EPOCH_SECONDS]:.1f} s)"
