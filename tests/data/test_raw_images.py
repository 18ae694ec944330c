"""The raw data contract that `prepare` enforces, and the deterministic rebuild it relies on."""

import hashlib

import numpy as np
import pytest

from lamina.data.image_arrays import IMAGES_FILE, LABELS_FILE, read_image_arrays
from lamina.data.raw_sources import build_mnist_5k
from lamina.errors import DataError


def test_shipped_mnist_meets_the_contract(mnist_arrays, cnn_config):
    images, labels = mnist_arrays
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * cnn_config.data.num_classes
    assert 20 < images.mean() < 50  # ink on a dark background, as MNIST is


def test_rebuild_is_byte_for_byte_identical(tmp_path, mnist_dir):
    """`data.dvc` can only be honoured after a rebuild if the builder is deterministic."""
    build_mnist_5k(tmp_path / "again")
    for name in (IMAGES_FILE, LABELS_FILE):
        first = hashlib.md5((mnist_dir / name).read_bytes()).hexdigest()
        second = hashlib.md5((tmp_path / "again" / name).read_bytes()).hexdigest()
        assert first == second


def _save(folder, images=None, labels=None, raw_images: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if raw_images is not None:
        (folder / IMAGES_FILE).write_bytes(raw_images)
    elif images is not None:
        np.save(folder / IMAGES_FILE, images)
    if labels is not None:
        np.save(folder / LABELS_FILE, labels)
    else:
        np.save(folder / LABELS_FILE, rng.integers(0, 10, size=20))


def _good_images(n=20):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28)).astype(np.uint8)


def _valid_npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, _good_images())
    return buffer.getvalue()


with_nan = _good_images().astype(np.float32)
with_nan[3, 4, 5] = np.nan

BAD_RAW_DATA = {
    "random bytes": (dict(raw_images=np.random.default_rng(1).bytes(5000)), "not a readable .npy"),
    "empty file": (dict(raw_images=b""), "not a readable .npy"),
    "truncated": (dict(raw_images=_valid_npy_bytes()[:-1000]), "not a readable .npy"),
    "wrong image shape": (
        dict(images=np.zeros((20, 32, 32), np.uint8)),
        "expected shape (N, 28, 28), got (20, 32, 32)",
    ),
    "flat images": (dict(images=np.zeros((20, 784), np.uint8)), "expected shape (N, 28, 28)"),
    "no images": (dict(images=np.zeros((0, 28, 28), np.uint8)), "holds no images"),
    "NaN pixels": (dict(images=with_nan), "1 image(s) contain NaN"),
    "pixels out of range": (
        dict(images=np.full((20, 28, 28), 300.0)),
        "pixel values must lie in [0, 255]",
    ),
    "label out of range": (
        dict(images=_good_images(), labels=np.array([3] * 19 + [10])),
        "1 label(s) outside [0, 10)",
    ),
    "negative label": (
        dict(images=_good_images(), labels=np.array([-1] + [3] * 19)),
        "outside [0, 10)",
    ),
    "float labels": (
        dict(images=_good_images(), labels=np.full(20, 0.5)),
        "expected a 1-D integer array",
    ),
    "label count mismatch": (
        dict(images=_good_images(), labels=np.zeros(19, dtype=int)),
        "19 labels for 20 images",
    ),
    "string pixels": (
        dict(images=np.full((20, 28, 28), "x")),
        "expected uint8 or float pixels",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RAW_DATA))
def test_bad_raw_data_is_one_error_naming_the_file(tmp_path, cnn_config, case):
    arrays, expected = BAD_RAW_DATA[case]
    folder = tmp_path / "mnist"
    _save(folder, **arrays)
    data = cnn_config.data.model_copy(update={"path": str(folder)})
    with pytest.raises(DataError) as error:
        read_image_arrays(data)
    message = str(error.value)
    assert expected in message
    assert str(folder) in message
    assert "\n" not in message


def test_missing_file_says_how_to_get_it(tmp_path, cnn_config):
    data = cnn_config.data.model_copy(update={"path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="file not found; run `lamina data ensure`"):
        read_image_arrays(data)


def test_float_pixels_in_range_are_accepted_and_rounded(tmp_path, cnn_config):
    folder = tmp_path / "mnist"
    _save(folder, images=np.clip(_good_images().astype(np.float64) + 0.2, 0, 255))
    images, _ = read_image_arrays(cnn_config.data.model_copy(update={"path": str(folder)}))
    assert images.dtype == np.uint8
    assert np.array_equal(images, _good_images())
