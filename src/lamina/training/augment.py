"""Random affine jitter for image batches, done on the batch's device in one grid sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor, max_shift_px: float, max_rotation_deg: float, generator: torch.Generator
) -> torch.Tensor:
    """Shift each (B, C, H, W) image by up to `max_shift_px` and rotate by up to the angle."""
    if max_shift_px == 0 and max_rotation_deg == 0:
        return images
    batch, _, height, width = images.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(max_rotation_deg))
    # affine_grid works in [-1, 1] coordinates: a shift of p pixels is 2p / size.
    shift_x, shift_y = uniform(2 * max_shift_px / width), uniform(2 * max_shift_px / height)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Border padding repeats the background instead of inventing a new pixel value.
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)
