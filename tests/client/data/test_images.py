"""Image folders, few-shot draws for image folders and the batch sampler."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client._exceptions import DatasetError
from client.data.fewshot import few_shot_indices
from client.data.images import load_image_folder
from client.data.sampler import BatchSampler

# --------------------------------------------------------------------------- image folders

# class folder -> [(file name, mode, (width, height), colour)]
TRAIN = {
    "cat": [("a.png", "RGB", (40, 30), (255, 0, 0)), ("b.jpg", "RGB", (16, 16), (0, 255, 0))],
    "dog": [("c.png", "RGBA", (20, 50), (0, 0, 255, 128)), ("d.bmp", "L", (33, 33), 77)],
    "bird_x": [("e.png", "L", (64, 20), 200), ("f.PNG", "RGB", (17, 9), (10, 20, 30))],
}
TEST = {
    "cat": [("g.png", "RGB", (30, 30), (1, 2, 3))],
    "dog": [("h.png", "RGB", (30, 40), (4, 5, 6))],
    "bird_x": [("i.png", "L", (12, 30), 9)],
}


def _write_split(root: Path, split: str, layout: dict[str, list[tuple]]) -> None:
    from PIL import Image

    for name, files in layout.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for file_name, mode, size, colour in files:
            Image.new(mode, size, colour).save(folder / file_name)
        (folder / "notes.txt").write_text("not an image")


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _write_split(root, "train", TRAIN)
    _write_split(root, "test", TEST)
    return root


def test_load_image_folder(image_root: Path) -> None:
    train = load_image_folder(image_root, "train", 16)
    assert train.class_names == ["bird_x", "cat", "dog"]  # sorted folder names
    assert train.pixels.dtype == torch.uint8
    assert train.pixels.shape == (6, 3, 16, 16)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]  # files sorted within each class
    assert len(train) == 6
    # solid colours survive the resize and crop (lossless formats)
    assert bool((train.pixels[2] == torch.tensor([255, 0, 0]).view(3, 1, 1)).all())  # cat/a.png
    assert bool((train.pixels[4] == torch.tensor([0, 0, 255]).view(3, 1, 1)).all())  # dog/c.png RGBA
    assert bool((train.pixels[5] == 77).all())  # dog/d.bmp grayscale -> three equal channels
    assert bool((train.pixels[0] == 200).all())  # bird_x/e.png
    assert bool((train.pixels[1] == torch.tensor([10, 20, 30]).view(3, 1, 1)).all())  # upper-case suffix
    # the test split takes the training class order
    test = load_image_folder(image_root, "test", 8, class_names=train.class_names)
    assert test.pixels.shape == (3, 3, 8, 8)
    assert test.labels.tolist() == [0, 1, 2]
    assert test.class_names == train.class_names


def test_image_set_subset(image_root: Path) -> None:
    train = load_image_folder(image_root, "train", 16)
    part = train.subset(np.array([5, 0]))
    assert part.labels.tolist() == [2, 0]
    assert torch.equal(part.pixels[0], train.pixels[5])
    assert part.class_names == train.class_names


def test_centre_crop_of_a_non_square_image(tmp_path: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))  # white middle third
    folder = tmp_path / "train" / "only"
    folder.mkdir(parents=True)
    image.save(folder / "x.png")
    loaded = load_image_folder(tmp_path, "train", 10)
    assert loaded.pixels.shape == (1, 3, 10, 10)
    assert int(loaded.pixels[0, :, :, 3:7].min()) >= 250  # the centre is the white part


def test_missing_split_folder(image_root: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_image_folder(image_root, "val", 16)
    assert str(image_root / "val") in str(info.value)


def test_split_without_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    (tmp_path / "train" / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        load_image_folder(tmp_path, "train", 16)
    assert str(tmp_path / "train") in str(info.value)


def test_split_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError) as info:
        load_image_folder(tmp_path, "train", 16)
    assert str(tmp_path / "train") in str(info.value)


# --------------------------------------------------------------------------- few-shot


def test_few_shot_indices() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    chosen = few_shot_indices(labels, 5, seed=1)
    assert len(np.unique(chosen)) == len(chosen)
    counts = np.bincount(labels.numpy()[chosen], minlength=3)
    assert counts.tolist() == [5, 3, 5]  # all of class 1, which has fewer
    assert np.array_equal(few_shot_indices(labels, 5, seed=1), chosen)
    assert not np.array_equal(few_shot_indices(labels, 5, seed=2), chosen)
    everything = few_shot_indices(labels, 100, seed=1)
    assert sorted(everything.tolist()) == list(range(20))


def test_few_shot_handles_shuffled_labels() -> None:
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 1, 0])
    chosen = few_shot_indices(labels, 2, seed=0)
    assert np.bincount(labels.numpy()[chosen]).tolist() == [2, 2, 2]


# --------------------------------------------------------------------------- batch sampler


def test_batch_sampler_sizes_and_epochs() -> None:
    sampler = BatchSampler(12, 4, seed=0)
    epoch = [sampler.next_batch() for _ in range(3)]
    assert all(len(b) == 4 for b in epoch)
    assert sorted(np.concatenate(epoch).tolist()) == list(range(12))  # one epoch covers the data
    second = [sampler.next_batch() for _ in range(3)]
    assert sorted(np.concatenate(second).tolist()) == list(range(12))
    assert not np.array_equal(np.concatenate(epoch), np.concatenate(second))  # reshuffled


def test_batch_sampler_drops_the_tail_and_clamps_the_batch() -> None:
    sampler = BatchSampler(10, 4, seed=0)
    batches = [sampler.next_batch() for _ in range(6)]
    assert all(len(b) == 4 for b in batches)
    assert len(np.unique(np.concatenate(batches[:2]))) == 8  # no repeat within an epoch
    small = BatchSampler(3, 8, seed=0)
    assert sorted(small.next_batch().tolist()) == [0, 1, 2]


def test_batch_sampler_resume() -> None:
    reference = BatchSampler(10, 3, seed=5)
    for _ in range(4):
        reference.next_batch()
    state = json.loads(json.dumps(reference.state_dict()))  # plain data, survives JSON too
    future = [reference.next_batch().tolist() for _ in range(10)]

    restored = BatchSampler(10, 3, seed=999)
    restored.load_state_dict(copy.deepcopy(state))
    assert [restored.next_batch().tolist() for _ in range(10)] == future
    fresh = BatchSampler(10, 3, seed=999)
    assert [fresh.next_batch().tolist() for _ in range(10)] != future
