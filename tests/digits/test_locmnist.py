"""The seed's Loc-MNIST canvas, replayed here step by step from mk_locmnist.py on a few synthetic digits:
digits saved as PIL JPEGs and read back by OpenCV in grey, legacy np.random draws per file, the distractor
resized by cv2.resize (linear) and pasted over the centre."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digits.locmnist import seed_loc_canvases, seed_train_val

cv2 = pytest.importorskip("cv2")


def _jpeg_roundtrip(digit: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="JPEG")
    return cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), 0)


def _replay_first_canvas(images: np.ndarray, labels: np.ndarray, f_size: int, seed: int) -> np.ndarray:
    """mk_locmnist.synthetic for the first file of class 0 (files of a class in name order)."""
    np.random.seed(seed)
    img = _jpeg_roundtrip(images[np.flatnonzero(labels == 0)[0]])
    a = np.random.randint(224 - 28 + 1)
    b = np.random.randint(224 - 28 + 1) if a in (0, 196) else 196 * np.random.randint(2)
    black = np.zeros([224, 224])
    if np.random.randint(2) == 0:
        black[a : a + 28, b : b + 28] = img
    else:
        black[b : b + 28, a : a + 28] = img
    fake_files = np.flatnonzero(labels == np.random.randint(10))
    fake = _jpeg_roundtrip(images[fake_files[np.random.randint(len(fake_files))]])
    fake = cv2.resize(fake, None, fx=f_size, fy=f_size)
    low, high = int(112 - 28 * f_size / 2), int(112 + 28 * f_size / 2)
    black[low:high, low:high] = fake
    return black.astype(np.uint8)


@pytest.mark.parametrize("f_size", [1, 4])
def test_the_first_canvas_is_the_seeds(f_size: int) -> None:
    rng = np.random.default_rng(3)
    images = np.zeros((30, 28, 28), np.uint8)
    images[:, 5:23, 7:21] = rng.integers(0, 256, size=(30, 18, 14))
    labels = np.arange(30) % 10
    expected = _replay_first_canvas(images, labels, f_size, seed=1)
    index, canvas = next(seed_loc_canvases(images, labels, f_size, seed=1))
    assert index == 0
    np.testing.assert_array_equal(canvas, expected)


def test_the_split_is_the_seed_loaders() -> None:
    """locmnist.read_and_split_data: per class, shuffle the train listing then the test listing, 80/20."""
    import random

    train_labels, test_labels = np.arange(50) % 10, np.arange(20) % 10
    random.seed(1)
    expected_train, expected_val = [], []
    for c in range(10):
        listing = np.flatnonzero(train_labels == c).tolist()
        random.shuffle(listing)
        random.shuffle(np.flatnonzero(test_labels == c).tolist())
        expected_train += listing[:4]
        expected_val += listing[4:5]
    assert seed_train_val(train_labels, test_labels, seed=1) == (expected_train, expected_val)
