"""A multi-layer perceptron: layers of neurons, each a weighted sum plus bias and an activation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lamina.models.activations import make_activation


class MultiLayerPerceptron(nn.Module):
    """(B, 1, H, W) -> flatten (B, H*W) -> [Linear -> activation -> dropout] per hidden size
    -> Linear -> logits (B, C)."""

    def __init__(
        self,
        num_inputs: int,
        num_classes: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_inputs
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), make_activation(activation), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
