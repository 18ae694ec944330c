"""The form a classifier is registered in: raw pixels in, class probabilities out.

The fitted preprocessing (pixel mean and std from the training split) is stored as buffers
inside the module, so the registered model needs nothing else to run on raw images.
"""

from __future__ import annotations

import torch
from torch import nn


class RawImageClassifier(nn.Module):
    """(B, H, W) or (B, 1, H, W) pixels in [0, 255] -> (B, C) class probabilities."""

    def __init__(self, network: nn.Module, pixel_mean: float, pixel_std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(1)
        standardized = (pixels.float() - self.pixel_mean) / self.pixel_std
        return torch.softmax(self.network(standardized), dim=1)
