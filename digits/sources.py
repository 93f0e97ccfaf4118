"""Where digit glyphs come from, and the fixed split between pretraining and downstream tasks.

scikit-learn's ``load_digits`` (1,797 real handwritten 8x8 digits) is split once, stratified and
seeded: 60% may be used to pretrain the small CLIP, 40% are held out and only ever appear in
downstream tasks (themselves split train/val/test). Glyphs are float arrays in [0, 1], ink = 1.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["NUMBER_WORDS", "heldout_indices", "glyph", "pretrain_indices", "render_digit", "sklearn_digits"]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SPLIT_SEED = 20230618  # fixed forever: changing it would leak held-out digits into pretraining
_HELDOUT_FRACTION = 0.4
_HELDOUT_PARTS = {"train": (0.0, 0.4), "val": (0.4, 0.5), "test": (0.5, 1.0)}


@lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8) in [0, 1] and labels (1797,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@lru_cache(maxsize=1)
def _partition() -> tuple[np.ndarray, np.ndarray]:
    _, labels = sklearn_digits()
    rng = np.random.default_rng(_SPLIT_SEED)
    pretrain, heldout = [], []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * _HELDOUT_FRACTION)
        heldout.append(members[:cut])
        pretrain.append(members[cut:])
    return np.sort(np.concatenate(pretrain)), np.sort(np.concatenate(heldout))


def pretrain_indices() -> np.ndarray:
    return _partition()[0]


def heldout_indices(split: str) -> np.ndarray:
    """Held-out digits for a downstream split: train 40%, val 10%, test 50% of each class."""
    if split not in _HELDOUT_PARTS:
        raise ValueError(f"split must be one of {list(_HELDOUT_PARTS)}; got {split!r}")
    low, high = _HELDOUT_PARTS[split]
    _, labels = sklearn_digits()
    heldout = _partition()[1]
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
