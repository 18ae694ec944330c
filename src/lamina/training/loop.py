"""The supervised training step (classification or regression) that `scaffold.run_epochs`
drives on every Ray Train worker.

Each epoch: train on this worker's shard, validate on the whole validation split (each rank
scores its share), step the learning rate, stop early when validation stops improving.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from lamina.config.schema import ExperimentConfig
from lamina.features.text import PAD_ID
from lamina.models import build_model_to_train
from lamina.tracking.training_runs import TrackedRun
from lamina.training.augment import random_affine
from lamina.training.context import TrainingRunContext
from lamina.training.distillation import TEACHER_LOGITS, mixed_loss
from lamina.training.early_stopping import EarlyStopping
from lamina.training.scaffold import Worker, autocast, run_epochs, training_shard, unwrap
from lamina.training.tasks import SupervisedTask, supervised_task


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


class SupervisedStep:
    """One epoch of a classifier or regressor: train on this worker's shard, validate on the
    whole validation split, step the learning rate, ask early stopping."""

    def __init__(self, context: TrainingRunContext, worker: Worker) -> None:
        import ray.train
        import ray.train.torch

        config = context.experiment
        self.config, self.worker = config, worker
        self.task = supervised_task(config)
        self.model = ray.train.torch.prepare_model(build_model_to_train(config, context.vocabulary))
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = _make_scheduler(self.optimizer, config)
        stopping = config.train.early_stopping
        self.stopping = EarlyStopping(stopping.mode, stopping.patience)
        self.train_shard = training_shard(context.train_split_by_ray, worker.rank)
        self.val_dataset = ray.train.get_dataset_shard("val")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        config, device = self.config, self.worker.device
        train_loss = _train_one_epoch(
            self.model,
            self.optimizer,
            self.train_shard,
            self.task,
            config,
            device,
            self.worker.rng,
            epoch,
        )
        metrics = {
            "train/loss": train_loss,
            **_validate(self.model, self.val_dataset, self.task, config, device),
        }
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        # Every rank holds the same validation metrics (summed across ranks), so every rank
        # takes the same early-stopping decision.
        self.stopping.update(epoch, metrics[config.train.early_stopping.monitor])
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopping.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopping.load_state_dict(state["early_stopping"])

    def log_epoch_artifacts(self, run: TrackedRun, epoch: int) -> None:
        """Nothing but the metrics: the evaluate stage draws the plots."""

    def stop_reason(self) -> str | None:
        stopping = self.stopping
        if not stopping.should_stop:
            return None
        return (
            f"early stop: {self.config.train.early_stopping.monitor} has not improved for "
            f"{stopping.patience} epochs "
            f"(best {stopping.best_value:.4f} at epoch {stopping.best_epoch + 1})"
        )


def train_fn_per_worker(loop_config: dict[str, TrainingRunContext]) -> None:
    """Ray Train's per-worker function for supervised experiments."""
    run_epochs(TrainingRunContext.from_loop_config(loop_config), SupervisedStep)
