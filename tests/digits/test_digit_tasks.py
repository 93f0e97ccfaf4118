"""The offline digit tasks and the MNIST builders: the seed's placement and colour rules hold."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from digits import TASK_NAMES
from digits.mnist import REBIAS_COLOURS, biased_mnist, load_mnist, loc_mnist
from digits.tasks import (
    _STREAMS,
    COLOURS,
    SPLIT_COUNTS,
    TASKS,
    _border_position,
    _compose,
    build_split,
    write_task_folder,
)

LOC_TASKS = [name for name, spec in TASKS.items() if spec.kind == "loc"]


def test_task_names_match_the_generators() -> None:
    assert set(TASK_NAMES) == set(TASKS) == set(_STREAMS) and len(_STREAMS) == len(TASKS)
    assert {spec.source for spec in TASKS.values()} == {"sklearn", "mnist"}
    for name, spec in TASKS.items():  # each MNIST task is its scikit-learn twin on the other source
        if spec.source == "mnist":
            twin = TASKS[name.replace("mnist-digits", "digits")]
            assert (twin.source, twin.kind, twin.real_px, twin.fake_px) == ("sklearn", *astuple(spec)[:3])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_balanced_and_deterministic(task: str) -> None:
    images, labels = build_split(task, "val", seed=3)
    again, _ = build_split(task, "val", seed=3)
    other, _ = build_split(task, "val", seed=4)
    assert images.shape == (10 * SPLIT_COUNTS["val"], 3, 32, 32) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [SPLIT_COUNTS["val"]] * 10
    assert np.array_equal(images, again) and not np.array_equal(images, other)


def test_centred_digits_sit_in_the_middle() -> None:
    images, _ = build_split("digits", "test", seed=0, per_class=20)
    ink = images.mean(axis=1) / 255.0  # (N, 32, 32)
    rows, cols = np.indices((32, 32))
    for canvas in ink:
        centre = (np.sum(rows * canvas) / canvas.sum(), np.sum(cols * canvas) / canvas.sum())
        assert abs(centre[0] - 15.5) < 5 and abs(centre[1] - 15.5) < 5


def test_border_positions_touch_a_border_on_every_side() -> None:
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(400):
        top, left = _border_position(32, 10, rng)
        touching = {"top": top == 0, "bottom": top == 22, "left": left == 0, "right": left == 22}
        assert any(touching.values()) and 0 <= top <= 22 and 0 <= left <= 22
        sides |= {side for side, hit in touching.items() if hit}
    assert sides == {"top", "bottom", "left", "right"}


@pytest.mark.parametrize("task", LOC_TASKS)
def test_loc_digits_have_a_centred_distractor_and_ink_at_a_border(task: str) -> None:
    spec = TASKS[task]
    images, _ = build_split(task, "test", seed=0, per_class=10)
    ink = images[:, 0] > 128
    low = (32 - spec.fake_px) // 2
    assert ink[:, low : low + spec.fake_px, low : low + spec.fake_px].any(axis=(1, 2)).mean() > 0.95
    band = spec.real_px
    edges = ink.copy()
    edges[:, band:-band, band:-band] = False
    if spec.fake_px < 32 - 2 * band:  # the 1:1 distractor is inside the band-free centre
        assert edges.any(axis=(1, 2)).mean() > 0.95


@pytest.mark.parametrize("task", LOC_TASKS)
def test_loc_digits_label_is_the_border_digit_and_the_distractor_is_centred(task: str) -> None:
    """Composed with a full-ink labelled digit and blank distractors, only a real_px box at a border
    has ink; with a blank labelled digit and full-ink distractors, only the centred fake_px box."""
    spec = TASKS[task]
    full, blank = np.ones((8, 8), np.float32), np.zeros((8, 8), np.float32)
    images = np.stack([blank, full])
    rng = np.random.default_rng(0)
    for _ in range(40):
        real = _compose(spec, full, 0, images, np.array([0]), rng, 32)[0] > 128  # (32, 32)
        rows, cols = np.nonzero(real)
        assert rows.max() - rows.min() + 1 == spec.real_px and cols.max() - cols.min() + 1 == spec.real_px
        assert rows.min() == 0 or cols.min() == 0 or rows.max() == 31 or cols.max() == 31
        fake = _compose(spec, blank, 0, images, np.array([1]), rng, 32)[0] > 128
        low = (32 - spec.fake_px) // 2
        expected = np.zeros((32, 32), bool)
        expected[low : low + spec.fake_px, low : low + spec.fake_px] = True
        assert np.array_equal(fake, expected)


@pytest.mark.parametrize(
    ("task", "train_rho", "test_rho"),
    [
        ("biased-digits-08", 0.8, 0.2),
        ("biased-digits-09", 0.9, 0.1),
        ("biased-mnist-digits-08", 0.8, 0.2),
        ("biased-mnist-digits-09", 0.9, 0.1),
    ],
)
def test_biased_digits_follow_rho_and_are_white_on_one_colour(task, train_rho, test_rho) -> None:
    for split, rho in (("train", train_rho), ("test", test_rho)):
        images, labels = build_split(task, split, seed=0)
        colours = (COLOURS * 255).round().astype(np.uint8)
        corner = images[:, :, 0, 0]  # the background colour of each image
        own = np.all(corner == colours[labels], axis=1)
        for label in range(10):  # exactly int(n * rho) per class, as ReBias
            assert own[labels == label].sum() == int((labels == label).sum() * rho)
        others = {tuple(c) for c in corner[~own & (labels == 0)]}
        assert len(others) == min(9, int((~own & (labels == 0)).sum()))  # spread over the other colours
        for image, background in zip(images[:50], corner[:50], strict=True):
            pixels = image.reshape(3, -1).T
            white = np.all(pixels == 255, axis=1)
            assert np.all(white | np.all(pixels == background, axis=1))  # binarised: two colours only


def test_write_task_folder_is_complete_and_not_rewritten(tmp_path: Path) -> None:
    root = write_task_folder("loc-digits-1x1", tmp_path / "loc")
    for split, count in SPLIT_COUNTS.items():
        classes = sorted(p.name for p in (root / split).iterdir())
        assert len(classes) == 10 and "seven" in classes
        assert sum(len(list((root / split / c).glob("*.png"))) for c in classes) == 10 * count
    stamp = (root / "test" / "seven").stat().st_mtime_ns
    write_task_folder("loc-digits-1x1", tmp_path / "loc")
    assert (root / "test" / "seven").stat().st_mtime_ns == stamp
    assert json.loads((root / "task.json").read_text())["task"] == "loc-digits-1x1"


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def mnist_copy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 6:22, 8:20] = rng.integers(1, 256, size=(n, 16, 12))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_load_mnist_reads_idx_files_and_names_missing_ones(mnist_copy: Path, tmp_path: Path) -> None:
    images, labels = load_mnist(mnist_copy, "train")
    assert images.shape == (60, 28, 28) and labels.tolist()[:3] == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path / "empty", "test")


def test_loc_mnist_places_the_real_digit_at_a_border_and_the_fake_in_the_centre(mnist_copy: Path) -> None:
    images, labels = load_mnist(mnist_copy, "train")
    real = np.full_like(images, 200)  # the real digit is a solid block: its place is easy to find
    canvases = loc_mnist(real, labels, fake_scale=1, seed=1)
    assert canvases.shape == (60, 224, 224)
    for canvas in canvases:
        rows, cols = np.nonzero(canvas == 200)
        top, left, bottom, right = rows.min(), cols.min(), rows.max(), cols.max()
        assert top == 0 or left == 0 or bottom == 223 or right == 223
        assert np.all(canvas[98:126, 98:126] == 200)  # the fake (also 200 here) covers the centre
    big = loc_mnist(images, labels, fake_scale=4, seed=1)
    assert big[:, 56:168, 56:168].any(axis=(1, 2)).all()


def test_biased_mnist_counts_and_colours(mnist_copy: Path) -> None:
    images, labels = load_mnist(mnist_copy, "train")
    coloured = biased_mnist(images, labels, rho=0.5, seed=1)
    assert coloured.shape == (60, 28, 28, 3)
    assert np.all(coloured[images != 0] == 255)
    background = coloured[:, 0, 0]
    own = np.all(background == REBIAS_COLOURS[labels], axis=1)
    for label in range(10):
        assert own[labels == label].sum() == int((labels == label).sum() * 0.5)
