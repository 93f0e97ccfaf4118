"""The seed-fidelity behaviour of ``blackvip train``/``eval``/``plan`` against the real server:
epoch-counted runs and schedules, the divergence guard, an encoder that cannot load spends nothing,
the seed evaluator's metrics, base-to-new evaluation and a plan priced by the server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client import BlackVIPClient
from client.training.rundir import RunDir
from tests.helpers import ServerProcess, make_image_folder, tiny_argv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("server")
    argv = tiny_argv(folder / "ledger.sqlite3", "--price-per-1k-images", "2.5")
    process = ServerProcess(argv, log_path=folder / "server.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))  # 3 classes, 8 train and 4 test each


def blackvip(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLACKVIP_API_KEY": ""}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def train(server: ServerProcess, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return blackvip(
        "train", "--url", server.url, "--data", str(data), "--out", str(out), "--shots", "8", *extra
    )


def test_epochs_set_the_length_and_bars_decay_runs_over_it(server, dataset, tmp_path) -> None:
    # 24 few-shot images, batch 12: 2 batches an epoch, so 3 epochs are 6 steps
    done = train(server, dataset, tmp_path / "bar", "--method", "bar", "--epochs", "3", "--batch-size", "12")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 6 and summary["train"]["images"] == 6 * 6 * 12
    lines = [json.loads(line) for line in (tmp_path / "bar" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["lr"] > lines[-1]["lr"] == pytest.approx(0.1)  # decayed to min_lr within 6 steps
    override = train(
        server, dataset, tmp_path / "steps", "--epochs", "3", "--steps", "2", "--batch-size", "12"
    )
    assert override.returncode == 0, override.stderr
    assert json.loads(override.stdout)["steps"] == 2  # --steps wins


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(server, dataset, tmp_path) -> None:
    common = ("--a", "1e38", "--batch-size", "12", "--checkpoint-every", "100")
    start = train(server, dataset, tmp_path / "nan", *common, "--steps", "0")  # a good checkpoint at step 0
    assert start.returncode == 0, start.stderr
    checkpoint = RunDir(tmp_path / "nan").checkpoint
    before = checkpoint.read_bytes()
    done = train(server, dataset, tmp_path / "nan", *common, "--steps", "5", "--resume")
    assert done.returncode == 1
    assert re.search(r"diverged at step [12]: ", done.stderr), done.stderr[-2000:]
    assert "last good checkpoint (step 0)" in done.stderr and "Lower the learning rate" in done.stderr
    assert checkpoint.read_bytes() == before  # the diverged parameters were never saved
    fresh = train(server, dataset, tmp_path / "fresh", *common, "--steps", "5")
    assert fresh.returncode == 1 and "no checkpoint yet" in fresh.stderr
    assert not RunDir(tmp_path / "fresh").checkpoint.exists()


def test_a_missing_encoder_fails_before_any_query(server, dataset, tmp_path) -> None:
    with BlackVIPClient(server.url) as api:
        before = api.usage().total
    done = train(
        server, dataset, tmp_path / "mae", "--encoder", "mae", "--encoder-path", str(tmp_path / "nope")
    )
    assert done.returncode == 1
    assert "--encoder-path" in done.stderr and "--encoder scratch" in done.stderr
    with BlackVIPClient(server.url) as api:
        after = api.usage().total
    assert (after.requests, after.images) == (before.requests, before.images)


def test_seed_scratch_encoder_trains(server, dataset, tmp_path) -> None:
    done = train(
        server, dataset, tmp_path / "scratch", "--encoder", "scratch", "--steps", "2", "--batch-size", "12"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"]["images"] == 2 * 10 * 12


def test_summary_has_the_seed_evaluators_metrics(server, dataset, tmp_path) -> None:
    done = blackvip("eval", "--url", server.url, "--data", str(dataset), "--out", str(tmp_path / "zs"))
    assert done.returncode == 0, done.stderr
    test = json.loads(done.stdout)["evaluations"]["test"]
    per_class = test["per_class_accuracy"]
    assert set(per_class) == {"class_0", "class_1", "class_2"}
    assert test["mean_per_class_accuracy"] == pytest.approx(sum(per_class.values()) / 3)
    assert test["accuracy"] == pytest.approx(test["mean_per_class_accuracy"])  # 4 test images per class
    assert 0.0 <= test["macro_f1"] <= 1.0 and test["images"] == 12


def test_base_to_new_trains_on_base_and_evaluates_new(server, dataset, tmp_path) -> None:
    run = tmp_path / "base"
    done = train(server, dataset, run, "--subsample-classes", "base", "--steps", "2", "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary["evaluations"]["test"]["per_class_accuracy"]) == {"class_0", "class_1"}  # ceil(3/2)
    assert summary["train"]["images"] == 2 * 10 * 8
    new = blackvip(
        "eval", "--url", server.url, "--data", str(dataset), "--run", str(run), "--subsample-classes", "new"
    )
    assert new.returncode == 0, new.stderr
    evaluated = json.loads(new.stdout)["evaluations"]["test"]
    assert set(evaluated["per_class_accuracy"]) == {"class_2"} and evaluated["images"] == 4


def test_plan_asks_the_server_for_its_limits_and_price(server) -> None:
    done = blackvip(
        "plan", "--url", server.url, "--datasets", "eurosat", "--methods", "blackvip", "--seeds", "1"
    )
    assert done.returncode == 0, done.stderr
    assert f"/v1/info of {server.url}" in done.stdout and "2.5 per 1,000 images" in done.stdout
    assert "| eurosat | blackvip | 1 | 10 | 160 | 5,000 | 6,400,000 |" in done.stdout
    assert "1 per 1,000 texts" in done.stdout  # the server's default text price
    texts = 10  # eurosat's 10 classes x its preset's one template, at registration
    assert f"{(2.5 * (6_400_000 + 8100) + texts) / 1000:,.2f}" in done.stdout
