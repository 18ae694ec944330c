"""Seeded, stratified train / validation / test splits."""

from __future__ import annotations

import numpy as np

from lamina.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


def stratified_subsample(labels: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Indices of at most `max_samples` rows keeping each class's share (sorted)."""
    if max_samples >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(len(members) * max_samples / len(labels)))
        keep.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(keep))


def split_train_val_test(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Split row indices so every class keeps its share in each split.

    Each class is shuffled with the seed and cut by the fractions, so the same labels, fractions
    and seed always give the same split. Every class needs at least one row in every split.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"only one class ({classes.tolist()}) in the data: nothing to learn")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for cls, count in zip(classes, counts, strict=True):
        n_val = round(count * val_fraction)
        n_test = round(count * test_fraction)
        if min(n_val, n_test, count - n_val - n_test) < 1:
            raise DataError(
                f"class {cls} has {count} row(s): too few to put at least one in each of "
                f"train/val/test with val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
        members = rng.permutation(np.flatnonzero(labels == cls))
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    # Shuffle across classes so a split read in order is not sorted by label.
    return {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}
