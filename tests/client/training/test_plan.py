"""``blackvip plan``: the seed's arithmetic (steps = epochs x floor(16 C / 128)), queries at the
server's limits and cost, from known sizes or from dataset folders; and the CLI without torch."""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from client.data.datasets import DATASETS
from client.training.config import build_config
from client.training.plan import KNOWN_SIZES, Limits, data_size, images_per_request, plan_job, plan_rows
from server.settings import ServerSettings
from tests.client.data.test_datasets import build_eurosat

# The seed's epochs (the seed's docs/configuration.md) and, written out by hand, floor(16 x C / 128) batches.
SEED_STEPS = {
    "caltech101": (100, 5000 * 12),
    "oxford_pets": (37, 5000 * 4),
    "stanford_cars": (196, 2500 * 24),
    "oxford_flowers": (102, 5000 * 12),
    "food101": (101, 5000 * 12),
    "fgvc_aircraft": (100, 5000 * 12),
    "sun397": (397, 1000 * 49),
    "dtd": (47, 5000 * 5),
    "svhn": (10, 5000 * 1),
    "eurosat": (10, 5000 * 1),
    "resisc45": (45, 5000 * 5),
    "clevr": (8, 5000 * 1),
    "ucf101": (101, 5000 * 12),
    "imagenet": (1000, 500 * 125),
}


def test_every_benchmark_has_a_step_count() -> None:
    assert set(SEED_STEPS) == set(DATASETS) == set(KNOWN_SIZES)


@pytest.mark.parametrize("dataset", sorted(SEED_STEPS))
@pytest.mark.parametrize("method", ["blackvip", "vp-spsa", "bar"])
def test_steps_are_the_seeds_epochs_times_batches(dataset: str, method: str) -> None:
    classes, steps = SEED_STEPS[dataset]
    config = build_config({"data": "d", "dataset": dataset, "method": method})
    assert KNOWN_SIZES[dataset].classes == classes
    assert config.steps is None and config.total_steps(16 * classes) == steps
    row = plan_job(config, data_size(config, None), Limits())
    assert row.steps == steps and row.size.train_images == 16 * classes


def test_eurosat_is_the_seeds_6_4_million_images_per_seed() -> None:
    config = build_config({"data": "d", "dataset": "eurosat", "method": "blackvip"})
    row = plan_job(config, data_size(config, None), Limits())
    assert row.steps == 5000 and row.train_images == 6_400_000  # 5,000 x 128 x 2q
    per_request = images_per_request(224, "float32", 2048, 64 * 2**20)
    assert per_request == 111  # 602,121 bytes an image under 64 MiB
    assert row.train_requests == 1 + 5000 * 12  # ceil(1,280 / 111) = 12 a step, plus the registration
    texts = 10 * len(config.templates)  # the registration: 10 classes x the preset's templates
    assert row.eval_images == 8100 and row.cost == pytest.approx((6_400_000 + 8100 + texts) / 1000)
    bar = build_config({"data": "d", "dataset": "eurosat", "method": "bar"})
    assert plan_job(bar, data_size(bar, None), Limits()).train_images == 5000 * 128 * 6  # q + 1


def test_in_flight_plans_one_candidate_a_request() -> None:
    # eurosat at uint8, 224 px: 445 images fit 64 MiB, so one at a time a step of 10 x 128 is 3 requests;
    # in flight, each candidate's 128 images travel alone so the client can overlap the server
    base = {"data": "d", "dataset": "eurosat", "method": "blackvip", "wire_dtype": "uint8"}
    one, piped = build_config(base), build_config({**base, "in_flight": 2})
    rows = [plan_job(config, data_size(config, None), Limits()) for config in (one, piped)]
    assert [row.train_requests for row in rows] == [1 + 5000 * 3, 1 + 5000 * 10]
    assert rows[0].train_images == rows[1].train_images and rows[0].cost == rows[1].cost


def test_default_limits_are_the_servers_defaults() -> None:
    defaults, limits = ServerSettings(), Limits()
    assert limits.max_batch_images == defaults.max_batch_images
    assert limits.max_request_bytes == defaults.max_request_bytes
    assert limits.price_per_1k_images == defaults.price_per_1k_images
    assert limits.price_per_1k_texts == defaults.price_per_1k_texts


def test_eval_every_counts_each_evaluation_and_price_scales_cost() -> None:
    config = build_config({"data": "d", "dataset": "eurosat", "steps": 100, "eval_every": 25})
    row = plan_job(config, data_size(config, None), Limits(price_per_1k_images=2.0, price_per_1k_texts=0.5))
    assert row.eval_images == (1 + 100 // 25 + 1) * 8100  # at step 0, every 25 steps, and the final one
    texts = 10 * len(config.templates)
    assert row.cost == pytest.approx((2.0 * (row.train_images + row.eval_images) + 0.5 * texts) / 1000)


def test_sizes_come_from_the_folders_when_present(tmp_path: Path) -> None:
    build_eurosat(tmp_path)  # 3 classes, 3 train images each
    args = Namespace(
        datasets=["eurosat"], methods=["blackvip", "zeroshot"], seeds=[1], data=tmp_path, shots=16,
        steps=None, epochs=2, batch_size=None, eval_every=None, subsample_classes=None,
    )  # fmt: skip
    rows = plan_rows(args, Limits())
    assert rows[0].size.classes == 3 and rows[0].size.train_images == 9  # short classes kept whole
    assert rows[0].steps == 2  # 2 epochs x 1 short batch
    assert rows[0].train_images == 2 * 10 * 9 and rows[0].eval_images == 6
    assert rows[1].steps == 0 and rows[1].train_images == 0 and rows[1].eval_images == 6
    assert "folders under" in rows[0].size.source


def test_base_and_new_halves_of_the_known_class_counts() -> None:
    base = build_config({"data": "d", "dataset": "oxford_pets", "subsample_classes": "base"})
    new = build_config({"data": "d", "dataset": "oxford_pets", "subsample_classes": "new"})
    assert data_size(base, None).classes == 19 and data_size(new, None).classes == 18


def test_unknown_size_is_an_error_that_says_what_to_pass() -> None:
    from client._exceptions import BlackVIPError

    config = build_config({"data": "d", "dataset": "loc-digits-1x1"})
    with pytest.raises(BlackVIPError, match="--data"):
        data_size(config, None)


def test_plan_cli_prints_the_table_without_importing_torch() -> None:
    code = (
        "import sys; from client.cli.commands import main; "
        "rc = main(['plan', '--datasets', 'eurosat', 'imagenet', '--methods', 'blackvip', 'bar', "
        "'--seeds', '1', '2', '--price', '0.5']); "
        "assert 'torch' not in sys.modules, 'plan imported torch'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| eurosat | blackvip | 1 | 10 | 160 | 5,000 | 6,400,000 |" in done.stdout
    assert "| imagenet | bar | 2 | 1,000 | 16,000 | 62,500 | 48,000,000 |" in done.stdout
    assert "0.5 per 1,000 images" in done.stdout and "8 jobs" in done.stdout


def test_bench_dry_run_is_the_plan_and_runs_nothing(tmp_path: Path) -> None:
    from client.cli.commands import main

    workdir = tmp_path / "bench"
    assert (
        main(["bench", "--data", str(tmp_path), "--datasets", "dtd", "--dry-run", "--workdir", str(workdir)])
        == 0
    )
    assert not workdir.exists()
