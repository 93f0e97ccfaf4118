"""A named optimiser: its preset lands over the dataset's, flags still win, it brings its step rule or its
evolution strategy, it is refused where it was not measured; ``blackvip demo --compare`` runs each on the
seed's training images."""

from __future__ import annotations

import argparse
import tomllib
import typing
from pathlib import Path

import pytest

from client._exceptions import BlackVIPError
from client.cli.demo import COMPARED, demo_configs, equal_image_length
from client.training.config import (
    ES_OPTIMIZERS,
    PRESETS_FILE,
    RULES,
    ConfigError,
    TrainConfig,
    base_optimizer,
    build_config,
    optimizer_rule,
    preset_values,
)
from client.training.es import CMAES
from client.training.methods import build_spsa, build_zo
from client.training.plan import images_per_step
from client.training.zo_rules import GradientCorrection

NAMED = {name: entry for name, entry in tomllib.loads(PRESETS_FILE.read_text()).get("optimizers", {}).items()}


def test_the_settings_offer_exactly_the_rules_and_the_named_optimisers() -> None:
    choices = typing.get_args(TrainConfig.model_fields["optimizer"].annotation)
    assert set(choices) == set(RULES) | set(NAMED) | set(ES_OPTIMIZERS)  # + the evolution strategies
    assert set(COMPARED) <= set(NAMED)
    assert {entry["rule"] for entry in NAMED.values()} >= {"spsa-gc", "cma-es"}  # one of each kind at least
    for name, entry in NAMED.items():
        assert entry["rule"] in RULES + ES_OPTIMIZERS and base_optimizer(name) == entry["rule"]
        assert optimizer_rule(name) == (entry["rule"] if entry["rule"] in RULES else "spsa-gc")
        assert Path(entry["results"]).name.startswith("query_efficiency")
    assert all(optimizer_rule(rule) == base_optimizer(rule) == rule for rule in RULES)


@pytest.mark.parametrize("name", list(NAMED))
def test_a_named_optimisers_preset_lands_over_the_datasets_and_under_flags(name: str) -> None:
    settings = NAMED[name]["blackvip"]
    config = build_config({"data": "d", "dataset": "loc-digits-1x1", "optimizer": name})
    assert config.optimizer == name
    for key, value in settings.items():
        assert getattr(config, key) == value, key
    assert preset_values("loc-digits-1x1", "blackvip", name) == {
        **preset_values("loc-digits-1x1", "blackvip"),
        **settings,
    }
    flag_wins = build_config({"data": "d", "dataset": "loc-digits-1x1", "optimizer": name, "a": 0.123})
    assert flag_wins.a == 0.123
    assert config.strategy == NAMED[name]["rule"]
    optimizer = build_zo(config)
    if NAMED[name]["rule"] == "cma-es":
        assert isinstance(optimizer, CMAES) and optimizer.evaluations_per_step() == settings["es_popsize"]
    else:
        rule = {"spsa-gc": "GradientCorrection"}[NAMED[name]["rule"]]
        assert type(build_spsa(config).rule).__name__ == rule
    plain = build_config({"data": "d", "dataset": "loc-digits-1x1"})
    assert plain.optimizer == "spsa-gc" and type(build_spsa(plain).rule) is GradientCorrection
    assert (plain.batch_size, plain.a, plain.subspace_dim) == (128, 0.01, 0)  # the seed's, untouched


@pytest.mark.parametrize("name", list(NAMED))
def test_a_named_optimiser_is_refused_for_a_method_it_was_not_measured_on(name: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"--optimizer {name} has settings for blackvip only \(bench/results/"
    ):
        build_config({"data": "d", "method": "vp-spsa", "optimizer": name})
    if NAMED[name]["rule"] in RULES:  # methods without SPSA ignore a step rule, as they always have
        assert build_config({"data": "d", "method": "bar", "optimizer": name}).method == "bar"
    else:  # and refuse an evolution strategy, as --optimizer cma-es is refused
        with pytest.raises(ConfigError, match=rf"--optimizer {name} trains blackvip and vp-spsa, not bar"):
            build_config({"data": "d", "method": "bar", "optimizer": name})


def _demo_args(steps: int, eval_every: int) -> argparse.Namespace:
    return argparse.Namespace(
        compare=True, api_key=None, task="loc-digits-1x1", seed=1, steps=steps, eval_every=eval_every
    )


def test_demo_compare_runs_each_named_optimiser_on_the_seeds_training_images(tmp_path: Path) -> None:
    configs = demo_configs(_demo_args(500, 50), "http://x", tmp_path, tmp_path / "runs")
    assert COMPARED == ("spsa-gc-q1", "cma-es-d500")
    assert list(configs) == ["zeroshot", "blackvip", "blackvip-spsa-gc-q1", "blackvip-cma-es-d500"]
    seed = configs["blackvip"]
    assert seed.optimizer == "spsa-gc" and seed.batch_size == 128 and seed.steps == 500
    for name in COMPARED:
        named = configs[f"blackvip-{name}"]
        assert named.optimizer == name and named.out == tmp_path / "runs" / f"blackvip-{name}"
        per_step = {"seed": images_per_step(seed), "n": images_per_step(named)}
        assert seed.steps * per_step["seed"] == named.steps * per_step["n"] == 640_000
        assert seed.eval_every * per_step["seed"] == named.eval_every * per_step["n"]
    assert configs["blackvip-cma-es-d500"].steps == 500  # 20 candidates x 64 images a step: the seed's 1,280
    without = demo_configs(
        argparse.Namespace(**{**vars(_demo_args(500, 50)), "compare": False}), "http://x", tmp_path, tmp_path
    )
    assert list(without) == ["zeroshot", "blackvip"]


def test_equal_image_length_refuses_lengths_another_step_size_cannot_match() -> None:
    seed = build_config({"data": "d", "steps": 3, "eval_every": 1})  # 1,280 images a step
    fits = build_config({"data": "d", "batch_size": 32})  # 320
    assert equal_image_length(seed, fits) == {"steps": 12, "eval_every": 4}
    odd = build_config({"data": "d", "q": 3})  # 768 images a step: 3,840 total fits, 1,280 does not
    with pytest.raises(BlackVIPError, match="every 1,280; choose --steps and --eval-every"):
        equal_image_length(seed, odd)
