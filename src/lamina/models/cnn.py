"""A VGG-style convolutional classifier for small single-channel images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lamina.models.activations import make_activation


class ConvNet(nn.Module):
    """Blocks of two 3x3 convolutions and a 2x2 max-pool, then a two-layer classifier head.

    (B, 1, H, W) -> [conv-conv-pool] per entry of `channels` -> flatten -> hidden -> logits (B, C)
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        num_classes: int,
        channels: Sequence[int],
        hidden_size: int,
        dropout: float,
        activation: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        height, width = image_shape
        for out_channels in channels:
            for conv_in in (in_channels, out_channels):
                layers.append(nn.Conv2d(conv_in, out_channels, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(make_activation(activation))
            layers.append(nn.MaxPool2d(2))
            in_channels = out_channels
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * height * width, hidden_size),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))
