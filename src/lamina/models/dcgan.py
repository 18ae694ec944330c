"""A DCGAN pair for 28x28 single-channel images (Radford et al., 2015), small enough for CPUs.

The generator upsamples noise 7 -> 14 -> 28 with transposed convolutions and BatchNorm; the
discriminator mirrors it with strided convolutions. The discriminator has no BatchNorm: under
DDP its running statistics would be broadcast from rank 0 and it would see real and fake batch
statistics mixed in one forward; LeakyReLU alone trains stably at this size.
"""

from __future__ import annotations

import torch
from torch import nn

from lamina.config.schema import DCGANConfig, ExperimentConfig
from lamina.errors import ConfigError
from lamina.models.activations import make_activation


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, 1, 28, 28) in [-1, 1], the range the data is scaled to."""

    def __init__(self, latent_dim: int, channels: int, activation: str) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * channels * 7 * 7, bias=False),  # (B, 2c*7*7)
            nn.Unflatten(1, (2 * channels, 7, 7)),  # (B, 2c, 7, 7)
            nn.BatchNorm2d(2 * channels),
            make_activation(activation),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),  # (B, c, 14, 14)
            make_activation(activation),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1),  # (B, 1, 28, 28)
            nn.Tanh(),
        )
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z))


class Discriminator(nn.Module):
    """images (B, 1, 28, 28) -> one logit per image (B,): high means "looks real"."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 4, stride=2, padding=1),  # (B, c, 14, 14)
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),  # (B, 2c, 7, 7)
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * channels * 7 * 7, 1),  # (B, 1)
        )
        self.apply(_dcgan_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's init: weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), biases zero."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_gan(config: ExperimentConfig) -> tuple[Generator, Discriminator]:
    """The pair a `dcgan` model config describes; its `activation` is the generator's."""
    model = config.model
    if not isinstance(model, DCGANConfig):
        raise TypeError(f"build_gan needs a dcgan model config, got {type(model).__name__}")
    if tuple(config.data.image_shape) != (28, 28):
        raise ConfigError(
            f"model.kind dcgan generates 28x28 images, but data.image_shape is "
            f"{list(config.data.image_shape)}: resize the images or pick another model"
        )
    return (
        Generator(model.latent_dim, model.generator_channels, model.activation),
        Discriminator(model.discriminator_channels),
    )
