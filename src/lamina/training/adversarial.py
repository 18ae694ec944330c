"""The GAN training step that `scaffold.run_epochs` drives on every Ray Train worker.

Each epoch, on every batch of this worker's shard: a discriminator step then a generator step;
the losses are averaged over workers. Rank 0 also logs a grid drawn from fixed noise into the
MLflow run, so the run shows the samples improving.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lamina.evaluation.gan_metrics import plot_sample_grid
from lamina.models.dcgan import build_gan
from lamina.tracking.training_runs import TrackedRun
from lamina.training.context import TrainingRunContext
from lamina.training.scaffold import Worker, autocast, run_epochs, training_shard, unwrap

# One-sided label smoothing: a discriminator never fully sure of real images keeps giving the
# generator useful gradients instead of saturating (Salimans et al., 2016).
REAL_TARGET = 0.9
SAMPLE_GRID_SIZE = 64


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


class AdversarialStep:
    """One epoch of the DCGAN pair; after it, rank 0 logs a grid drawn from fixed noise. There
    is no early stopping: GAN losses do not say when samples are good."""

    def __init__(self, context: TrainingRunContext, worker: Worker) -> None:
        import ray.train.torch

        config = context.experiment
        self.config, self.worker = config, worker
        # The same noise every epoch (and after a restart), so the sample grids are comparable.
        self.fixed_noise = torch.randn(
            SAMPLE_GRID_SIZE,
            config.model.latent_dim,
            generator=torch.Generator().manual_seed(config.train.seed),
        ).to(worker.device)
        generator, discriminator = build_gan(config)
        self.generator = ray.train.torch.prepare_model(generator)
        self.discriminator = ray.train.torch.prepare_model(discriminator)
        train = config.train
        self.optimizer_g = torch.optim.Adam(
            self.generator.parameters(), lr=train.lr, betas=train.adam_betas
        )
        self.optimizer_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=train.lr, betas=train.adam_betas
        )
        self.train_shard = training_shard(context.train_split_by_ray, worker.rank)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        return _train_one_epoch(
            self.generator,
            self.discriminator,
            self.optimizer_g,
            self.optimizer_d,
            self.train_shard,
            self.config,
            self.worker.device,
            self.worker.rng,
        )

    def state_dict(self) -> dict[str, Any]:
        generator_state = unwrap(self.generator).state_dict()
        return {
            # "model" is what the driver keeps as the trained weights: the generator.
            "model": generator_state,
            "generator": generator_state,
            "discriminator": unwrap(self.discriminator).state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])

    def log_epoch_artifacts(self, run: TrackedRun, epoch: int) -> None:
        """The sample grid, from the plain module: no DDP collective waits for ranks that do
        not join."""
        module = unwrap(self.generator)
        module.eval()  # BatchNorm on running statistics, as the generator is used after training
        with torch.no_grad():
            images = module(self.fixed_noise).cpu()
        module.train()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"epoch_{epoch:03d}.png"
            plot_sample_grid(images, path, f"samples after epoch {epoch + 1}")
            run.log_artifact(path, "samples")

    def stop_reason(self) -> str | None:
        return None


def train_gan_per_worker(loop_config: dict[str, TrainingRunContext]) -> None:
    """Ray Train's per-worker function for `dcgan` experiments."""
    run_epochs(TrainingRunContext.from_loop_config(loop_config), AdversarialStep)
