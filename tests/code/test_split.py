"""Splitting: stratified, seeded, disjoint and complete; impossible splits are clear errors."""

import numpy as np
import pytest

from lamina.data.split import split_train_val_test, stratified_subsample
from lamina.errors import DataError


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.permutation(np.repeat(np.arange(5), [100, 200, 60, 40, 100]))


def test_split_is_disjoint_complete_and_stratified(labels):
    parts = split_train_val_test(labels, 0.1, 0.2, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert len(joined) == len(labels) == len(np.unique(joined))
    for name, fraction in (("val", 0.1), ("test", 0.2), ("train", 0.7)):
        for cls, count in zip(*np.unique(labels, return_counts=True), strict=True):
            share = (labels[parts[name]] == cls).sum()
            assert abs(share - count * fraction) <= 1, (name, cls)


def test_same_seed_same_split_other_seed_other_split(labels):
    first = split_train_val_test(labels, 0.1, 0.1, seed=7)
    again = split_train_val_test(labels, 0.1, 0.1, seed=7)
    other = split_train_val_test(labels, 0.1, 0.1, seed=8)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], other["test"])


def test_split_is_not_sorted_by_label(labels):
    train = labels[split_train_val_test(labels, 0.1, 0.1, seed=0)["train"]]
    assert (np.diff(train) != 0).sum() > len(np.unique(labels))


def test_class_too_small_for_three_splits():
    labels = np.array([0] * 50 + [1] * 2)
    with pytest.raises(DataError, match="class 1 has 2 row"):
        split_train_val_test(labels, 0.1, 0.1, seed=0)


def test_single_class_is_rejected():
    with pytest.raises(DataError, match="only one class"):
        split_train_val_test(np.zeros(100, dtype=int), 0.1, 0.1, seed=0)


def test_subsample_keeps_class_shares(labels):
    keep = stratified_subsample(labels, 100, seed=0)
    assert len(keep) == pytest.approx(100, abs=5)
    shares = np.bincount(labels[keep]) / len(keep)
    assert np.allclose(shares, np.bincount(labels) / len(labels), atol=0.02)
    assert len(stratified_subsample(labels, 10_000, seed=0)) == len(labels)
