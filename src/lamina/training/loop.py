"""The per-worker training loop that Ray Train runs on every worker (Train V2 pattern).

A recipe: restore or build -> for each epoch: train on this worker's shard, validate on the
whole validation split, report metrics and a checkpoint (rank 0 writes, every rank reports),
stop early when validation stops improving. Rank 0 also logs each epoch to the MLflow run the
driver opened, so the run fills in while training goes on.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lamina.config.schema import ExperimentConfig
from lamina.features.text import PAD_ID
from lamina.models import build_model_to_train
from lamina.training.augment import random_affine
from lamina.training.distillation import TEACHER_LOGITS, mixed_loss
from lamina.training.early_stopping import EarlyStopping
from lamina.training.tasks import SupervisedTask, supervised_task

CHECKPOINT_FILE = "checkpoint.pt"
EPOCH_SECONDS = "epoch_seconds"  # logged every epoch by every loop

logger = logging.getLogger("lamina.train")


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


def make_optimizer(model: torch.nn.Module, config: ExperimentConfig) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=train.lr, momentum=0.9, weight_decay=train.weight_decay
        )
    optimizer_class = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(
        model.parameters(), lr=train.lr, betas=train.adam_betas, weight_decay=train.weight_decay
    )


def _make_scheduler(optimizer: torch.optim.Optimizer, config: ExperimentConfig):
    if config.train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def autocast(config: ExperimentConfig, device: torch.device):
    """bf16 autocast when `cluster.precision` asks for it, a no-op otherwise. Losses and
    reductions stay fp32 under it (autocast's own op list), so no loss scaling is needed."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.cluster.precision == "bf16"
    )


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _means_across_workers(
    totals: dict[str, float], count: int, device: torch.device
) -> dict[str, float]:
    """Every rank's sums added up and divided by every rank's row count: the same values on
    every rank. Ranks must pass the same keys in the same order."""
    sums = torch.tensor([*totals.values(), float(count)], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    return {key: (sums[i] / sums[-1]).item() for i, key in enumerate(totals)}


def _train_one_epoch(
    model, optimizer, shard, task: SupervisedTask, config, device, generator, epoch: int
) -> float:
    model.train()
    augment, distillation = config.train.augment, config.train.distillation
    total_loss, seen = 0.0, 0
    for batch in _training_batches(shard, task, config, device, generator, epoch):
        inputs = batch[task.input_key]
        if inputs.dim() == 4:  # images
            inputs = random_affine(
                inputs, augment.max_shift_px, augment.max_rotation_deg, generator
            )
        with autocast(config, device):
            outputs = model(inputs)
            loss = task.loss(outputs, batch[task.target_key])
            if distillation is not None:
                loss = mixed_loss(loss, outputs, batch[TEACHER_LOGITS], distillation)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.gradient_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.gradient_clip_norm)
        optimizer.step()
        total_loss += loss.item() * len(inputs)
        seen += len(inputs)
    return _means_across_workers({"train/loss": total_loss}, seen, device)["train/loss"]


def _training_batches(shard, task: SupervisedTask, config, device, generator, epoch: int):
    """This worker's shuffled batches for one epoch, grouped by text length when
    `train.length_buckets` asks for it."""
    batch_size = config.train.batch_size
    buckets = config.train.length_buckets
    rows = batch_size * max(buckets, 1)
    chunks = shard.iter_torch_batches(
        batch_size=rows,
        local_shuffle_buffer_size=max(4 * batch_size, rows),
        local_shuffle_seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)),
        device=device,
        pin_memory=config.cluster.pin_memory,
    )
    if not buckets:
        yield from chunks
        return
    for index, chunk in enumerate(chunks):
        # The same order on every rank (seeded by epoch and chunk, not by rank), so at each
        # step the ranks hold batches of similar length and neither waits long for the other.
        order = torch.Generator().manual_seed(config.train.seed + 100_003 * epoch + index)
        yield from length_buckets(chunk, task.input_key, batch_size, order)


def length_buckets(chunk: dict, key: str, batch_size: int, generator: torch.Generator):
    """Cut a chunk of token-id rows (padding 0, at the end) into batches of rows of similar
    length, in random order. A batch is only as long as its longest text (the models trim the
    rest), so random batches of short snippets are mostly padding: on the Rotten Tomatoes
    snippets (22 tokens on average, 60 at most) random batches of 64 hold 2.1 times the
    tokens of the text in them; batches cut from 16 batches' worth of rows sorted by length,
    1.08 times."""
    lengths = (chunk[key] != PAD_ID).sum(dim=1)
    by_length = torch.argsort(lengths, stable=True)
    batches = by_length.split(batch_size)
    for position in torch.randperm(len(batches), generator=generator).tolist():
        rows = batches[position]
        yield {name: column[rows] for name, column in chunk.items()}


@torch.no_grad()
def _validate(model, dataset, task: SupervisedTask, config, device) -> dict[str, float]:
    """The metrics over the whole validation split, the same on every rank. Each rank scores
    its own rows of every batch (rank, rank + n, ...) and the sums are added up across ranks:
    n ranks each score 1/n of the split instead of all of it (the CNN's epoch spent a tenth
    of its time scoring validation). Rows are scored one by one (eval mode: no dropout, batch
    norm from its running statistics), so which rank scores a row does not change its score.
    Batch norm's statistics are rank 0's on every rank first: each rank's moved with its own
    last batch, and rank 0's are the ones its checkpoint keeps (DDP hands them out again at the
    next training step anyway)."""
    network = unwrap(model)  # not through DDP: the ranks may score different numbers of rows
    network.eval()
    rank, ranks = _rank_and_world_size()
    if ranks > 1:
        for buffer in network.buffers():
            dist.broadcast(buffer, src=0)
    totals = dict.fromkeys(task.metric_keys, 0.0)
    seen = 0
    for batch in dataset.iter_torch_batches(
        batch_size=4 * config.train.batch_size, device=device, pin_memory=config.cluster.pin_memory
    ):
        inputs, targets = batch[task.input_key][rank::ranks], batch[task.target_key][rank::ranks]
        if len(targets) == 0:  # a last batch of fewer rows than ranks
            continue
        with autocast(config, device):
            outputs = network(inputs)
        for key, value in task.metric_sums(outputs.float(), targets).items():
            totals[key] += value
        seen += len(targets)
    return _means_across_workers(totals, seen, device)


def log_epoch_to_mlflow(loop_config: dict[str, Any], metrics: dict[str, float], epoch: int):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    timestamp = int(time.time() * 1000)
    MlflowClient(loop_config["tracking_uri"]).log_batch(
        loop_config["mlflow_run_id"],
        metrics=[Metric(key, value, timestamp, epoch) for key, value in metrics.items()],
    )


def logged_epochs(loop_config: dict[str, Any]) -> set[int]:
    """The epochs the run already holds. Rank 0 logs an epoch before reporting its checkpoint
    (a trial that Tune stops at that report keeps it), so after a restart the epochs between
    the restored checkpoint and the failure are trained again but must not be logged again."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(loop_config["tracking_uri"]).get_metric_history(
        loop_config["mlflow_run_id"], EPOCH_SECONDS
    )
    return {point.step for point in history}


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    quiet_ray_train_reports()
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    task = supervised_task(config)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()

    # Same initial weights on every rank; augmentation noise differs per rank.
    seed_everything(config)
    generator = torch.Generator().manual_seed(config.train.seed * 1000 + rank)
    model = ray.train.torch.prepare_model(
        build_model_to_train(config, loop_config.get("vocabulary"))
    )
    optimizer = make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config)
    stopping = EarlyStopping(config.train.early_stopping.mode, config.train.early_stopping.patience)
    start_epoch = 0
    # A restart (from a checkpoint or, if none was saved yet, from scratch) trains again the
    # epochs after its checkpoint; those the run already holds are not logged twice.
    already_logged = logged_epochs(loop_config) if rank == 0 else set()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: continue where the run left off
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopping.load_state_dict(state["early_stopping"])
        restore_rng_state(state["rng_states"][rank], generator, device)
        start_epoch = state["epoch"] + 1

    train_shard = training_shard(loop_config, rank)
    val_dataset = ray.train.get_dataset_shard("val")
    monitor = config.train.early_stopping.monitor
    for epoch in range(start_epoch, config.train.epochs):
        started = time.perf_counter()
        train_loss = _train_one_epoch(
            model, optimizer, train_shard, task, config, device, generator, epoch
        )
        metrics = {"train/loss": train_loss, **_validate(model, val_dataset, task, config, device)}
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        # Every rank holds the same validation metrics (summed across ranks), so every rank
        # takes the same early-stopping decision and none is left waiting in a collective.
        stopping.update(epoch, metrics[monitor])
        metrics[EPOCH_SECONDS] = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            rng_states = gather_rng_states(generator, device)
            if rank == 0:
                torch.save(
                    {
                        "epoch": epoch,
                        "model": unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "early_stopping": stopping.state_dict(),
                        "rng_states": rng_states,
                        "mlflow_run_id": loop_config["mlflow_run_id"],
                    },
                    Path(folder) / CHECKPOINT_FILE,
                )
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
                if epoch not in already_logged:
                    log_epoch_to_mlflow(loop_config, metrics, epoch)
                logger.info(
                    progress_line(epoch, config.train.epochs, metrics, loop_config.get("label"))
                )
            ray.train.report({"epoch": epoch, **metrics}, checkpoint=report_checkpoint)
        if stopping.should_stop:
            if rank == 0:
                logger.info(
                    f"early stop: {monitor} has not improved for {stopping.patience} epochs "
                    f"(best {stopping.best_value:.4f} at epoch {stopping.best_epoch + 1})"
                )
            break


def train_dataset_name(rank: int) -> str:
    """The dataset of one worker's rows of `train`, when the driver cut the split per rank
    (`driver.TrainingData`)."""
    return f"train_rank_{rank}"


def training_shard(loop_config: dict[str, Any], rank: int):
    """This worker's part of the training split: its share of Ray Train's streaming split, or
    the dataset the driver cut for its rank."""
    import ray.train

    if loop_config.get("train_split_by_ray", True):
        return ray.train.get_dataset_shard("train")
    return ray.train.get_dataset_shard(train_dataset_name(rank))


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO; our per-epoch line says the same thing once.

    Ray 2.60 names that logger after its file path, so `LoggingConfig(log_level=...)`, which
    filters `ray.train.*` names only, does not reach it.
    """
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def gather_rng_states(generator: torch.Generator, device: torch.device) -> list[dict]:
    """Every rank's random state, for rank 0's checkpoint: the loop's own generator (data
    order, augmentation or noise) and torch's global one (dropout; CUDA's too on a GPU), so a
    restart draws exactly what the lost epochs would have drawn."""
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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def progress_line(
    epoch: int, epochs: int, metrics: dict[str, float], label: str | None = None
) -> str:
    """One line per epoch; `label` tells concurrent runs (Tune trials) apart."""
    shown = "  ".join(
        f"{key} {value:.4f}" for key, value in metrics.items() if key != EPOCH_SECONDS
    )
    prefix = f"{label}: " if label else ""
    return f"{prefix}epoch {epoch + 1}/{epochs}  {shown}  ({metrics[EPOCH_SECONDS]:.1f} s)"
