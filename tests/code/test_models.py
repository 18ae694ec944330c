"""Models: shapes through every layer, every configurable activation, the registered form."""

import pytest
import torch

from lamina.models import build_model
from lamina.models.activations import ACTIVATIONS
from lamina.models.raw_input import RawImageClassifier


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("channels", [[8], [8, 16], [4, 8, 16]])
def test_cnn_maps_images_to_one_logit_per_class(cnn_config, activation, channels):
    model_config = cnn_config.model.model_copy(
        update={"activation": activation, "channels": channels}
    )
    model = build_model(cnn_config.model_copy(update={"model": model_config}))
    logits = model(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, cnn_config.data.num_classes)
    assert torch.isfinite(logits).all()


def test_cnn_learns_a_batch(cnn_config):
    """Backpropagation works end to end: the loss on one fixed batch falls when fitted."""
    torch.manual_seed(0)
    model = build_model(cnn_config)
    images, labels = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_raw_image_classifier_standardizes_and_returns_probabilities(cnn_config):
    network = build_model(cnn_config).eval()
    model = RawImageClassifier(network, pixel_mean=33.0, pixel_std=78.0).eval()
    raw = torch.randint(0, 256, (3, 28, 28)).float()
    with torch.no_grad():
        probabilities = model(raw)
        expected = torch.softmax(network(((raw - 33.0) / 78.0).unsqueeze(1)), dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))
