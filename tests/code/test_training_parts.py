"""Training helpers: early stopping decisions and state, augmentation that keeps shapes."""

import torch

from lamina.training.augment import random_affine
from lamina.training.early_stopping import EarlyStopping


def test_early_stopping_waits_for_patience_then_stops():
    stopping = EarlyStopping(mode="min", patience=2)
    assert stopping.update(0, 1.0)
    assert stopping.update(1, 0.5)
    assert not stopping.update(2, 0.6)
    assert not stopping.should_stop
    assert not stopping.update(3, 0.5)  # equal is not an improvement
    assert stopping.should_stop
    assert (stopping.best_epoch, stopping.best_value) == (1, 0.5)


def test_early_stopping_state_round_trips():
    stopping = EarlyStopping(mode="max", patience=3)
    for epoch, value in enumerate([0.5, 0.7, 0.6]):
        stopping.update(epoch, value)
    restored = EarlyStopping(mode="max", patience=3)
    restored.load_state_dict(stopping.state_dict())
    assert restored == stopping


def test_random_affine_keeps_shape_and_is_seeded():
    images = torch.rand(4, 1, 28, 28)
    first = random_affine(images, 2.0, 10.0, torch.Generator().manual_seed(1))
    again = random_affine(images, 2.0, 10.0, torch.Generator().manual_seed(1))
    assert first.shape == images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, images)
    assert random_affine(images, 0.0, 0.0, torch.Generator()) is images
