"""Scores for a digit generator, judged by a trained classifier instead of Inception.

Inception-v3 features mean nothing for 28x28 grey digits and cannot be downloaded here, so the
trained `cnn-mnist` ConvNet is the judge: its penultimate activations are the feature space of
a classifier-based FID, and its predictions say which digits the generator covers (a collapsed
generator draws a few classes only).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from lamina.models.cnn import ConvNet


def plot_sample_grid(images: np.ndarray | torch.Tensor, path: Path, title: str) -> None:
    """Images (N, 1, H, W) in [-1, 1] tiled 8 per row, grey on black, as a PNG at `path`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    pixels = torch.as_tensor(images).detach().cpu().float().clamp(-1, 1)[:, 0].numpy()
    count, height, width = pixels.shape
    columns = min(8, count)
    rows = math.ceil(count / columns)
    pad = 2
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad), -1.0)
    for index, image in enumerate(pixels):
        top = pad + (index // columns) * (height + pad)
        left = pad + (index % columns) * (width + pad)
        canvas[top : top + height, left : left + width] = image
    figure = Figure(figsize=(0.8 * columns + 0.4, 0.8 * rows + 0.7))
    axes = figure.subplots()
    axes.imshow(canvas, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@torch.no_grad()
def judge_features(
    network: ConvNet,
    pixel_mean: float,
    pixel_std: float,
    pixels_0_255: torch.Tensor,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's penultimate activations (N, hidden) and class probabilities (N, C).

    The features are the classifier head's hidden layer after its activation: the last
    representation before the logits, the role Inception's pool layer plays in FID.
    """
    network.eval()  # dropout off, BatchNorm on its running statistics
    hidden_layers, output_layer = network.classifier[:-1], network.classifier[-1]
    features, probabilities = [], []
    for start in range(0, len(pixels_0_255), batch_size):
        batch = pixels_0_255[start : start + batch_size].float()
        hidden = hidden_layers(network.features((batch - pixel_mean) / pixel_std))
        features.append(hidden)
        probabilities.append(torch.softmax(output_layer(hidden), dim=1))
    return torch.cat(features), torch.cat(probabilities)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)), as in FID (Heusel et al., 2017).
    """
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        # Dead ReLU units in the judge give all-zero rows, so C_a C_b is singular: SciPy warns,
        # yet the root (the one FID needs) stays accurate; checked against an eigh-based trace.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    # sqrtm returns tiny imaginary parts from rounding; the true root of C_a C_b is real.
    trace_root = np.trace(np.real(root))
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    return float(max(distance, 0.0))


@torch.no_grad()
def generate_pixels(
    generator: torch.nn.Module, num_samples: int, seed: int, batch_size: int = 500
) -> torch.Tensor:
    """`num_samples` images (N, 1, 28, 28) in [0, 255] from seeded noise, generator in eval mode."""
    generator.eval()
    noise = torch.randn(
        num_samples, generator.latent_dim, generator=torch.Generator().manual_seed(seed)
    )
    images = torch.cat(
        [
            generator(noise[start : start + batch_size])
            for start in range(0, num_samples, batch_size)
        ]
    )
    return (images.clamp(-1, 1) + 1) * 127.5


def gan_test_metrics(
    generator: torch.nn.Module,
    judge_network: ConvNet,
    pixel_mean: float,
    pixel_std: float,
    real_test_pixels_0_255: np.ndarray,
    num_samples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """`test/fid`, `test/min_class_share` and `test/mean_confidence` of generated digits.

    FID compares `num_samples` generated digits with every real test digit in the judge's
    feature space (lower is better). The smallest share of any class among the generated digits
    shows mode collapse (0.1 is a perfectly even mix of 10 classes), and the judge's mean
    confidence shows whether samples look like any digit at all. Deterministic for a `seed`.
    """
    real = torch.as_tensor(np.asarray(real_test_pixels_0_255, dtype=np.float32))
    if real.dim() == 3:
        real = real.unsqueeze(1)
    fake = generate_pixels(generator, num_samples, seed)
    real_features, _ = judge_features(judge_network, pixel_mean, pixel_std, real)
    fake_features, fake_probabilities = judge_features(judge_network, pixel_mean, pixel_std, fake)
    num_classes = fake_probabilities.shape[1]
    counts = torch.bincount(fake_probabilities.argmax(dim=1), minlength=num_classes)
    return {
        "test/fid": frechet_distance(real_features.numpy(), fake_features.numpy()),
        "test/min_class_share": (counts.min() / num_samples).item(),
        "test/mean_confidence": fake_probabilities.max(dim=1).values.mean().item(),
    }
