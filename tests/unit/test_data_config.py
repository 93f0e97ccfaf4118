"""Image folders, few-shot sampling, the batch sampler, settings, checkpoints and the query meter."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from client import checkpoint as checkpoint_module
from client._meter import EndpointCount, QueryMeter
from client.checkpoint import CHECKPOINT_NAME, atomic_write_json, load_checkpoint, save_checkpoint
from client.config import (
    METHODS,
    ConfigError,
    TrainConfig,
    batches_per_epoch,
    build_config,
    dataset_presets,
    preset_values,
)
from client.data import BatchSampler, DatasetError, few_shot_indices, load_image_folder

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


# --------------------------------------------------------------------------- settings


def test_build_config_precedence(tmp_path: Path) -> None:
    base = build_config({"data": "d"})
    assert base.c == 0.01 and base.batch_size == 128 and base.p_eps == 1.0  # defaults
    preset = build_config({"data": "d", "dataset": "eurosat"})
    assert preset.c == 0.005 and preset.p_eps == 0.4 and preset.batch_size == 128

    config_file = tmp_path / "job.toml"
    config_file.write_text('dataset = "eurosat"\nc = 0.02\nbatch-size = 32\nsteps = 7\n')
    from_file = build_config({"data": "d", "c": None}, config_file)
    assert from_file.dataset == "eurosat"
    assert from_file.c == 0.02  # file beats preset
    assert from_file.p_eps == 0.4  # preset still applies where the file is silent
    assert from_file.batch_size == 32 and from_file.steps == 7

    cli = build_config({"data": "d", "c": 0.03, "steps": 9, "batch_size": None}, config_file)
    assert cli.c == 0.03 and cli.steps == 9  # CLI beats file
    assert cli.batch_size == 32  # None means "not given"


def test_method_from_the_file_selects_its_presets(tmp_path: Path) -> None:
    config_file = tmp_path / "job.toml"
    config_file.write_text('method = "vp-spsa"\ndataset = "sun397"\n')
    config = build_config({"data": "d"}, config_file)
    assert config.method == "vp-spsa" and config.a == 20.0 and config.beta == 0.3
    overridden = build_config({"data": "d", "method": "bar"}, config_file)
    assert overridden.method == "bar" and overridden.min_lr == 0.01 and overridden.init_lr == 5.0


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"data": "d", "dataset": "no_such_set"})
    message = str(info.value)
    assert "no_such_set" in message
    assert "eurosat" in message and "imagenet" in message


@pytest.mark.parametrize(("field", "value"), [("shots", 0), ("q", 0), ("batch_size", -1)])
def test_invalid_values_name_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"data": "d", field: value})
    assert field in str(info.value)


def test_unknown_setting_is_rejected(tmp_path: Path) -> None:
    config_file = tmp_path / "job.toml"
    config_file.write_text("learning_rate = 3\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        build_config({"data": "d"}, config_file)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        build_config({"data": "d"}, tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("c = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config({"data": "d"}, broken)


def test_api_key_is_never_saved() -> None:
    config = build_config({"data": "d", "api_key": "secret-key"})
    assert config.api_key == "secret-key"
    saved = config.saved()
    assert "api_key" not in saved
    assert "secret-key" not in json.dumps(saved)
    assert saved["data"] == "d" and saved["method"] == "blackvip"


@pytest.mark.parametrize("method", METHODS)
def test_every_preset_builds_for_every_method(method: str) -> None:
    names = dataset_presets()
    assert len(names) >= 15
    for name in names:
        config = build_config({"data": "/data/x", "dataset": name, "method": method})
        assert isinstance(config, TrainConfig)
        assert config.method == method and config.dataset == name
        assert config.templates and all(t.count("{}") == 1 for t in config.templates)
        assert (config.steps or 0) > 0 or (config.epochs or 0) > 0
        # the per-method values really land in the config
        for key, value in preset_values(name, method).items():
            assert getattr(config, key) == value, (name, method, key)


def test_design_table_spot_checks() -> None:
    eurosat = build_config({"data": "d", "dataset": "eurosat", "method": "blackvip"})
    assert (eurosat.beta, eurosat.gamma, eurosat.c, eurosat.p_eps) == (0.9, 0.2, 0.005, 0.4)
    assert eurosat.templates == ["a centered satellite photo of {}."]
    assert eurosat.encoder == "mae"  # the seed's Coordinator encoder for the benchmarks
    for name in ("loc_mnist_1x1", "loc_mnist_1x4", "biased_mnist_08", "biased_mnist_09"):
        assert build_config({"data": "d", "dataset": name}).templates == [
            "This is a photo of {}"
        ]  # the seed's
    assert build_config({"data": "d", "dataset": "loc-digits-1x1"}).encoder == "random-pooled"  # our toy task
    sun = build_config({"data": "d", "dataset": "sun397"})
    assert sun.epochs == 1000 and sun.steps is None  # the seed's epochs, not steps


def test_steps_override_epochs_and_epochs_override_a_presets_steps(tmp_path: Path) -> None:
    both = build_config({"data": "d", "dataset": "eurosat", "steps": 7})
    assert both.total_steps(160) == 7  # --steps wins over the preset's epochs
    digits = build_config({"data": "d", "dataset": "loc-digits-1x1", "epochs": 3})
    assert digits.steps is None and digits.total_steps(160) == 3  # --epochs wins over a preset's steps
    assert build_config({"data": "d", "dataset": "loc-digits-1x1"}).total_steps(160) == 1000
    assert build_config({"data": "d"}).total_steps(160) == 5000  # nothing set: the old default


@pytest.mark.parametrize(
    ("train_images", "batch", "per_epoch"), [(160, 128, 1), (128, 128, 1), (100, 128, 1), (592, 128, 4)]
)
def test_batches_per_epoch_is_the_seeds_drop_last_loader(
    train_images: int, batch: int, per_epoch: int
) -> None:
    assert batches_per_epoch(train_images, batch) == per_epoch
    with pytest.raises(ConfigError, match="empty"):
        batches_per_epoch(0, batch)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert load_checkpoint(run_dir) is None
    generator = torch.Generator().manual_seed(3)
    sampler = BatchSampler(10, 3, seed=1)
    sampler.next_batch()
    state = {
        "step": 12,
        "params": torch.randn(50, generator=generator),
        "optimizer": {"k": 12, "momentum": torch.randn(50, generator=generator)},
        "rng": generator.get_state(),
        "sampler": sampler.state_dict(),
        "meter": {"loss": {"requests": 1, "images": 2, "bytes": 3}},
    }
    path = save_checkpoint(run_dir, state)
    assert path == run_dir / CHECKPOINT_NAME and path.is_file()
    assert os.listdir(run_dir) == [CHECKPOINT_NAME]  # no temp files left behind
    loaded = load_checkpoint(run_dir)
    assert loaded is not None
    assert loaded["step"] == 12 and loaded["meter"] == state["meter"]
    assert torch.equal(loaded["params"], state["params"])
    assert torch.equal(loaded["optimizer"]["momentum"], state["optimizer"]["momentum"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["sampler"] == state["sampler"]
    # overwrite
    save_checkpoint(run_dir, {"step": 13})
    assert load_checkpoint(run_dir) == {"step": 13}
    assert os.listdir(run_dir) == [CHECKPOINT_NAME]


def test_atomic_write_json_keeps_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out" / "metrics.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}

    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})  # not serialisable
    assert json.loads(path.read_text()) == {"b": 2}
    assert os.listdir(path.parent) == ["metrics.json"]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_json(path, {"b": 3})  # fails after the temp file was written
    assert json.loads(path.read_text()) == {"b": 2}
    assert os.listdir(path.parent) == ["metrics.json"]  # the temp file was removed


# --------------------------------------------------------------------------- query meter


def test_query_meter_plus_and_round_trip() -> None:
    first = QueryMeter()
    first.add("loss", 10, 1000)
    first.add("loss", 5, 500)
    first.add("tasks", 0, 20)
    second = QueryMeter()
    second.add("loss", 2, 200)
    second.add("logits", 7, 700)

    total = first.plus(second)
    assert total.to_dict() == {
        "loss": {"requests": 3, "images": 17, "bytes": 1700},
        "tasks": {"requests": 1, "images": 0, "bytes": 20},
        "logits": {"requests": 1, "images": 7, "bytes": 700},
    }
    assert (total.requests, total.images, total.bytes) == (5, 24, 2420)
    # plus makes a new meter: neither input changes
    assert first.to_dict()["loss"] == {"requests": 2, "images": 15, "bytes": 1500}
    assert "logits" not in first.to_dict()
    assert second.requests == 2

    restored = QueryMeter.from_dict(json.loads(json.dumps(total.to_dict())))
    assert restored.to_dict() == total.to_dict()
    assert restored.by_endpoint["loss"] == EndpointCount(3, 17, 1700)
    # to_dict is a copy
    snapshot = restored.to_dict()
    snapshot["loss"]["images"] = 0
    assert restored.images == 24
