"""Loc-MNIST as the seed makes and reads it (BlackVIP's datasets/mk_locmnist.py and locmnist.py).

What is the seed's here, and why it matters for accuracy figures:

- Pixels: the seed saves MNIST digits as JPEG files (torchvision PIL images, ``img.save("*.jpg")``, PIL's
  default quality 75), reads them back with OpenCV and resizes the distractor with ``cv2.resize`` (linear
  interpolation), then writes each 224 px canvas as a JPEG with ``cv2.imwrite`` (quality 95). The JPEG
  ringing and OpenCV's resampling are part of the images the published numbers were measured on.
- Draws: per split, legacy ``np.random.seed(seed)``, classes 0..9 in turn, each class's files in turn:
  border coordinate, the other coordinate, orientation, the distractor's class, the distractor's index.
  The seed walks ``os.listdir`` order, which depends on the file system; here files are walked in name
  order (``<index + 1>.jpg``, as the seed names them), so the rule is the seed's, each canvas may not be.
- Split: the seed's loader splits MNIST train 80/20 into train and val per class, after Python's
  ``random.seed(seed)`` shuffles each class's train listing and then its test listing; it is done here at
  build time so that ``blackvip train`` reads train/val/test folders.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from digits import SourceUnavailableError

__all__ = ["TRAIN_FRACTION", "seed_loc_canvases", "seed_train_val", "write_seed_loc_mnist"]

TRAIN_FRACTION = 0.8  # the seed's read_and_split_data(p_trn=0.8) for Loc-MNIST
CANVAS = 224
DIGIT_PX = 28


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as error:
        raise SourceUnavailableError(
            "the seed's Loc-MNIST is resized and written with OpenCV: pip install 'blackvip-sim[client]' "
            "(or pip install opencv-python-headless), or pass --loc-style pil-png"
        ) from error
    return cv2


def _as_seed_reads(digit: np.ndarray, cv2: Any) -> np.ndarray:
    """The digit as the seed reads it back: saved by PIL as a JPEG, decoded by OpenCV in grey."""
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="JPEG")
    return cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def seed_loc_canvases(
    images: np.ndarray, labels: np.ndarray, fake_scale: int, seed: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, 224 x 224 uint8 canvas) one at a time (all of MNIST would be 3 GB), in the seed's order."""
    cv2 = _cv2()
    state = np.random.RandomState(seed)  # the seed's np.random.seed(args.seed), once per split
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    far, fake_px = CANVAS - DIGIT_PX, DIGIT_PX * fake_scale
    low = int(CANVAS / 2 - fake_px / 2)
    for members in by_class:
        for index in members:
            a = state.randint(far + 1)
            b = state.randint(far + 1) if a in (0, far) else far * state.randint(2)
            top, left = (a, b) if state.randint(2) == 0 else (b, a)
            canvas = np.zeros((CANVAS, CANVAS), np.uint8)
            canvas[top : top + DIGIT_PX, left : left + DIGIT_PX] = _as_seed_reads(images[index], cv2)
            fake_members = by_class[state.randint(10)]
            fake = _as_seed_reads(images[fake_members[state.randint(len(fake_members))]], cv2)
            fake = cv2.resize(fake, None, fx=fake_scale, fy=fake_scale)  # cv2's default: linear
            canvas[low : low + fake_px, low : low + fake_px] = fake  # pasted over, as the seed
            yield int(index), canvas


def seed_train_val(
    train_labels: np.ndarray, test_labels: np.ndarray, seed: int = 1
) -> tuple[list[int], list[int]]:
    """Indices of the seed loader's 80/20 train/val split of the train canvases, per class in order:
    ``random.shuffle`` of the class's train listing, then of its test listing (which only moves the
    stream), first round(0.8 n) to train, the next round(0.2 n) to val."""
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for label in range(10):
        members = np.flatnonzero(train_labels == label).tolist()  # name order: <index + 1>.jpg
        rng.shuffle(members)
        rng.shuffle(np.flatnonzero(test_labels == label).tolist())
        n_train = round(len(members) * TRAIN_FRACTION)
        n_val = round(len(members) * (1 - TRAIN_FRACTION))
        train.extend(members[:n_train])
        val.extend(members[n_train : n_train + n_val])
    return train, val


def write_seed_loc_mnist(
    images: np.ndarray, labels: np.ndarray, fake_scale: int, seed: int, folder_of: dict[int, Path]
) -> None:
    """Each canvas to ``folder_of[index]/<digit>/<index + 1, 5 digits>.jpg``, written by OpenCV (the
    seed's names and encoder); an index without a folder (the split's rounding) is left out."""
    cv2 = _cv2()
    for index, canvas in seed_loc_canvases(images, labels, fake_scale, seed):
        if index not in folder_of:
            continue
        target = folder_of[index] / str(int(labels[index]))
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{index + 1:05d}.jpg"
        if not cv2.imwrite(str(path), canvas):
            raise OSError(f"OpenCV could not write {path}")
