"""Ray Data preprocessing: statistics come from the training split only."""

import numpy as np
import pytest

from lamina.data.image_parquet import write_image_split
from lamina.features.images import ImageStandardizer, preprocess_image_splits, read_image_features


@pytest.fixture
def splits_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "splits"
    folder.mkdir()
    # Train pixels are dark, val and test bright: a scaler fitted on all splits would show it.
    pixel_ranges = {"train": (0, 50), "val": (200, 256), "test": (200, 256)}
    for split, (low, high) in pixel_ranges.items():
        images = rng.integers(low, high, size=(30, 28, 28), dtype=np.uint8)
        write_image_split(folder / f"{split}.parquet", images, rng.integers(0, 10, size=30))
    return folder


def test_scaler_is_fitted_on_train_only_and_applied_to_all(
    local_ray, cnn_config, splits_dir, tmp_path
):
    features = tmp_path / "features"
    standardizer = preprocess_image_splits(cnn_config, splits_dir, features)

    import pyarrow.parquet as pq

    train_pixels = pq.read_table(splits_dir / "train.parquet").column("image").combine_chunks()
    train_pixels = train_pixels.flatten().to_numpy().astype(np.float64)
    assert standardizer.pixel_mean == pytest.approx(train_pixels.mean(), rel=1e-9)
    assert standardizer.pixel_std == pytest.approx(train_pixels.std(), rel=1e-6)
    assert standardizer.fitted_on_rows == 30

    train_images, _ = read_image_features(features / "train")
    test_images, test_labels = read_image_features(features / "test")
    assert train_images.shape == (30, 1, 28, 28) and train_images.dtype == np.float32
    assert abs(train_images.mean()) < 1e-4  # standardised with its own statistics
    assert test_images.mean() > 3  # bright test images stay far off: no leakage
    assert len(test_labels) == 30


def test_standardizer_round_trips_as_json(tmp_path):
    standardizer = ImageStandardizer(33.3, 78.6, (28, 28), ["a", "b"], 10)
    standardizer.save(tmp_path / "p.json")
    assert ImageStandardizer.load(tmp_path / "p.json") == standardizer
