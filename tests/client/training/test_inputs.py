"""A job's inputs: augmentation on benchmark data only (and ``--augment false``), the default few-shot
cache folder, and image folders relabelled for base-to-new."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.data.images import FileImageSet
from client.training.config import ConfigError, build_config
from client.training.inputs import fewshot_cache_dir, load_inputs
from tests.client.data.test_datasets import build_eurosat
from tests.helpers import make_image_folder


def test_benchmark_data_is_augmented_by_default_and_augment_false_turns_it_off(tmp_path: Path) -> None:
    build_eurosat(tmp_path)
    common = {"dataset": "eurosat", "data": tmp_path, "shots": 2, "fewshot_cache": tmp_path / "cache"}
    default = load_inputs(build_config(common), 32)
    assert isinstance(default.train, FileImageSet) and default.train.augment
    assert all(isinstance(s, FileImageSet) and not s.augment for s in default.evals.values())  # never at test
    off = load_inputs(build_config({**common, "augment": False}), 32)
    assert isinstance(off.train, FileImageSet) and not off.train.augment
    assert off.train.paths == default.train.paths  # the same few-shot draw, only the crops differ


def test_image_folders_are_never_augmented(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    inputs = load_inputs(build_config({"data": root, "shots": 2}), 32)
    assert len(inputs.train) == 2 * 3 and inputs.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(ConfigError, match="--augment applies to benchmark datasets"):
        load_inputs(build_config({"data": root, "augment": True}), 32)


def test_the_default_few_shot_cache_is_under_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = build_config({"dataset": "eurosat", "data": tmp_path})
    assert fewshot_cache_dir(config) == tmp_path / "xdg" / "blackvip-sim" / "fewshot" / "eurosat"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fewshot_cache_dir(config) == tmp_path / "home" / ".cache" / "blackvip-sim" / "fewshot" / "eurosat"
    chosen = build_config({"dataset": "eurosat", "data": tmp_path, "fewshot_cache": tmp_path / "mine"})
    assert fewshot_cache_dir(chosen) == tmp_path / "mine" / "eurosat"


def test_a_benchmark_run_writes_its_draw_into_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    build_eurosat(tmp_path)
    load_inputs(build_config({"dataset": "eurosat", "data": tmp_path, "shots": 2, "seed": 7}), 32)
    cached = tmp_path / "xdg" / "blackvip-sim" / "fewshot" / "eurosat" / "shot_2-seed_7.json"
    assert cached.is_file()
