"""Training settings: precedence, presets, validation, field tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.training.config import (
    FROM_EVALUATION,
    METHODS,
    NO_FLAG,
    RESUMABLE,
    ConfigError,
    TrainConfig,
    batches_per_epoch,
    build_config,
    dataset_presets,
    preset_values,
)

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


def test_field_tags_derive_every_list_of_names_from_the_class() -> None:
    assert TrainConfig.tagged(RESUMABLE) == {
        "url", "out", "max_wait_seconds", "eval_splits", "eval_batch", "eval_every", "steps", "epochs",
        "budget_images", "budget_cost", "checkpoint_every", "fewshot_cache", "in_flight", "tensorboard",
    }  # fmt: skip
    from_evaluation = {"url", "eval_splits", "eval_batch", "data", "subsample_classes"}
    assert TrainConfig.tagged(FROM_EVALUATION) == from_evaluation
    assert TrainConfig.tagged(NO_FLAG) == {"url", "api_key"}
    # nothing that shapes the trajectory may change on resume
    trajectory = {"seed", "method", "a", "c", "q", "batch_size", "shots", "data", "optimizer"}
    trajectory |= {"es_dim", "es_r0", "es_popsize", "es_steps"}  # the evolution strategies' settings
    assert not TrainConfig.tagged(RESUMABLE) & trajectory
