"""The per-worker GAN loop that Ray Train runs on every worker (Train V2 pattern, as loop.py).

A recipe: restore or build the generator and discriminator -> for each epoch: on every batch of
this worker's shard, a discriminator step then a generator step; report the losses averaged
over workers and a checkpoint (rank 0 writes, every rank reports). Rank 0 also logs each epoch
to the MLflow run the driver opened, with a grid drawn from fixed noise, so the run shows the
samples improving. There is no early stopping: GAN losses do not say when samples are good.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lamina.config.schema import ExperimentConfig
from lamina.evaluation.gan_metrics import plot_sample_grid
from lamina.models.dcgan import build_gan
from lamina.training.loop import (
    CHECKPOINT_FILE,
    EPOCH_SECONDS,
    autocast,
    gather_rng_states,
    log_epoch_to_mlflow,
    logged_epochs,
    progress_line,
    quiet_ray_train_reports,
    restore_rng_state,
    seed_everything,
    training_shard,
    unwrap,
)

# One-sided label smoothing: a discriminator never fully sure of real images keeps giving the
# generator useful gradients instead of saturating (Salimans et al., 2016).
REAL_TARGET = 0.9
SAMPLE_GRID_SIZE = 64

logger = logging.getLogger("lamina.train")


def _train_one_epoch(
    generator, discriminator, optimizer_g, optimizer_d, shard, config, device, noise_rng
) -> dict[str, float]:
    generator.train()
    discriminator.train()
    latent_dim = config.model.latent_dim
    # Sums of d_loss, g_loss, D(x), D(G(z)) and the image count, kept on the device so the
    # loop never waits on a GPU to hand back a number.
    totals = torch.zeros(5, dtype=torch.float64, device=device)
    for batch in shard.iter_torch_batches(
        batch_size=config.train.batch_size,
        local_shuffle_buffer_size=4 * config.train.batch_size,
        local_shuffle_seed=int(torch.randint(0, 2**31 - 1, (1,), generator=noise_rng)),
        device=device,
        pin_memory=config.cluster.pin_memory,
    ):
        real = batch["image"]  # (B, 1, 28, 28) in [-1, 1]
        size = len(real)
        noise = torch.randn(size, latent_dim, generator=noise_rng).to(device)
        targets = torch.cat(
            [torch.full((size,), REAL_TARGET, device=device), torch.zeros(size, device=device)]
        )
        # Discriminator: real and fake in one forward, so its DDP wrapper sees exactly one
        # forward per backward on every rank.
        with autocast(config, device):
            fake = generator(noise)
            logits = discriminator(torch.cat([real, fake.detach()]))  # (2B,)
            d_loss = F.binary_cross_entropy_with_logits(logits, targets)
        optimizer_d.zero_grad(set_to_none=True)
        d_loss.backward()
        optimizer_d.step()

        # Generator, non-saturating loss: maximise log D(G(z)) rather than minimise
        # log(1 - D(G(z))), whose gradient vanishes while D easily spots the fakes. This
        # backward also fills (and all-reduces) D's gradients; D's next zero_grad drops them,
        # which costs less than toggling requires_grad, which DDP does not allow.
        with autocast(config, device):
            g_loss = F.binary_cross_entropy_with_logits(
                discriminator(fake), torch.ones(size, device=device)
            )
        optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer_g.step()

        probabilities = torch.sigmoid(logits.detach().float())
        totals += torch.stack(
            [
                d_loss.detach() * size,
                g_loss.detach() * size,
                probabilities[:size].sum(),
                probabilities[size:].sum(),
                torch.tensor(float(size), device=device),
            ]
        ).double()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    d_loss_sum, g_loss_sum, d_real_sum, d_fake_sum, seen = totals.tolist()
    return {
        "train/d_loss": d_loss_sum / seen,
        "train/g_loss": g_loss_sum / seen,
        "train/d_real": d_real_sum / seen,
        "train/d_fake": d_fake_sum / seen,
    }


def _log_samples_to_mlflow(
    loop_config: dict[str, Any], generator: torch.nn.Module, fixed_noise: torch.Tensor, epoch: int
) -> None:
    """Rank 0 only: the plain module, so no DDP collective waits for ranks that do not join."""
    from mlflow.tracking import MlflowClient

    module = unwrap(generator)
    module.eval()  # BatchNorm on running statistics, as the generator is used after training
    with torch.no_grad():
        images = module(fixed_noise).cpu()
    module.train()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"epoch_{epoch:03d}.png"
        plot_sample_grid(images, path, f"samples after epoch {epoch + 1}")
        MlflowClient(loop_config["tracking_uri"]).log_artifact(
            loop_config["mlflow_run_id"], str(path), "samples"
        )


def train_gan_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function for `dcgan` experiments; the arguments as loop.py's."""
    import ray.train
    import ray.train.torch

    quiet_ray_train_reports()
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()

    # Same initial weights on every rank; the noise each rank draws differs.
    seed_everything(config)
    noise_rng = torch.Generator().manual_seed(config.train.seed * 1000 + rank)
    # The same noise every epoch (and after a restart), so the sample grids are comparable.
    fixed_noise = torch.randn(
        SAMPLE_GRID_SIZE,
        config.model.latent_dim,
        generator=torch.Generator().manual_seed(config.train.seed),
    ).to(device)
    generator_net, discriminator_net = build_gan(config)
    generator = ray.train.torch.prepare_model(generator_net)
    discriminator = ray.train.torch.prepare_model(discriminator_net)
    train = config.train
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=train.lr, betas=train.adam_betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=train.lr, betas=train.adam_betas)
    start_epoch = 0
    # A restart (from a checkpoint or, if none was saved yet, from scratch) trains again the
    # epochs after its checkpoint; those the run already holds are not logged twice.
    already_logged = logged_epochs(loop_config) if rank == 0 else set()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: continue where the run left off
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
        unwrap(generator).load_state_dict(state["generator"])
        unwrap(discriminator).load_state_dict(state["discriminator"])
        optimizer_g.load_state_dict(state["optimizer_g"])
        optimizer_d.load_state_dict(state["optimizer_d"])
        restore_rng_state(state["rng_states"][rank], noise_rng, device)
        start_epoch = state["epoch"] + 1

    train_shard = training_shard(loop_config, rank)
    for epoch in range(start_epoch, train.epochs):
        started = time.perf_counter()
        metrics = _train_one_epoch(
            generator,
            discriminator,
            optimizer_g,
            optimizer_d,
            train_shard,
            config,
            device,
            noise_rng,
        )
        metrics[EPOCH_SECONDS] = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            rng_states = gather_rng_states(noise_rng, device)
            if rank == 0:
                generator_state = unwrap(generator).state_dict()
                torch.save(
                    {
                        "epoch": epoch,
                        # "model" is what the driver keeps as the trained weights: the generator.
                        "model": generator_state,
                        "generator": generator_state,
                        "discriminator": unwrap(discriminator).state_dict(),
                        "optimizer_g": optimizer_g.state_dict(),
                        "optimizer_d": optimizer_d.state_dict(),
                        "rng_states": rng_states,
                        "mlflow_run_id": loop_config["mlflow_run_id"],
                    },
                    Path(folder) / CHECKPOINT_FILE,
                )
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
                if epoch not in already_logged:
                    log_epoch_to_mlflow(loop_config, metrics, epoch)
                    _log_samples_to_mlflow(loop_config, generator, fixed_noise, epoch)
                logger.info(progress_line(epoch, train.epochs, metrics, loop_config.get("label")))
            ray.train.report({"epoch": epoch, **metrics}, checkpoint=report_checkpoint)
