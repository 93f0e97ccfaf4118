"""The docs' promises (docs/, once the README's) kept through the command line against a real server: a
priced server with a small per-request image limit, so that costs and request packing are visible in the
counts."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from client import BlackVIPClient
from tests.helpers import ServerProcess, make_image_folder, tiny_argv

PRICE = 2.5  # per 1,000 images
MAX_BATCH_IMAGES = 40
BATCH = 12
PER_STEP = 10 * BATCH  # SPSA-GC, q = 5: 10 perturbed batches a step


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("server")
    argv = tiny_argv(
        folder / "ledger.sqlite3",
        "--max-batch-images",
        str(MAX_BATCH_IMAGES),
        "--price-per-1k-images",
        str(PRICE),
    )
    process = ServerProcess(argv, log_path=folder / "server.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


def blackvip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BLACKVIP_API_KEY": ""},
    )


def train(server: ServerProcess, data: Path, out: Path, *extra: str) -> dict:
    argv = ["train", "--url", server.url, "--data", str(data), "--out", str(out), "--shots", "8"]
    done = blackvip(*argv, "--batch-size", str(BATCH), *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_step_is_packed_into_requests_that_fit_the_servers_image_limit(server, dataset, tmp_path) -> None:
    summary = train(server, dataset, tmp_path / "run", "--steps", "2")
    requests_per_step = -(-PER_STEP // MAX_BATCH_IMAGES)  # 120 images in requests of at most 40
    assert requests_per_step == 3
    assert summary["train"]["requests"] == 2 * requests_per_step + 1  # + the task registration
    assert summary["train"]["images"] == 2 * PER_STEP
    assert summary["train"]["cost"] == pytest.approx(2 * PER_STEP * PRICE / 1000)


def test_budget_cost_stops_before_the_step_that_would_overspend(server, dataset, tmp_path) -> None:
    # 120 images a step cost 0.3 at 2.5 per 1,000: three steps are 0.9, a fourth would be 1.2
    summary = train(server, dataset, tmp_path / "run", "--steps", "50", "--budget-cost", "1.0")
    assert summary["stopped_because"] == "budget_cost" and summary["steps"] == 3
    assert summary["train"]["cost"] == pytest.approx(0.9)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["cost"] for line in lines] == pytest.approx([0.3, 0.6, 0.9])
    assert all(line["lr"] > 0 for line in lines)  # the learning rate of every step is logged


def test_wire_dtype_sets_what_travels_and_the_server_takes_each(server, dataset, tmp_path) -> None:
    sent = {}
    for dtype in ("float32", "float16", "uint8"):
        summary = train(server, dataset, tmp_path / dtype, "--steps", "1", "--wire-dtype", dtype)
        assert summary["train"]["images"] == PER_STEP
        sent[dtype] = summary["train"]["bytes"]
    pixels = PER_STEP * 3 * 32 * 32  # request bytes are dominated by the pixels
    assert sent["float32"] - sent["float16"] == pytest.approx(2 * pixels, rel=0.02)
    assert sent["float16"] - sent["uint8"] == pytest.approx(pixels, rel=0.02)


def test_plain_spsa_and_spsa_gc_take_different_paths(server, dataset, tmp_path) -> None:
    from client.training.rundir import RunDir

    train(server, dataset, tmp_path / "gc", "--steps", "3")
    train(server, dataset, tmp_path / "plain", "--steps", "3", "--optimizer", "spsa")
    gc, plain = RunDir(tmp_path / "gc").load_checkpoint(), RunDir(tmp_path / "plain").load_checkpoint()
    assert plain["config"]["optimizer"] == "spsa" and gc["config"]["optimizer"] == "spsa-gc"
    assert any(not np.array_equal(gc["prompter"][k], plain["prompter"][k]) for k in gc["prompter"])


def test_requests_in_flight_train_bit_identically_and_resume_exactly(server, dataset, tmp_path) -> None:
    from client.training.rundir import RunDir

    every = ("--checkpoint-every", "2")
    one = train(server, dataset, tmp_path / "one", "--steps", "4", *every)
    three = train(server, dataset, tmp_path / "three", "--steps", "4", *every, "--in-flight", "3")
    # the same images; in flight, one candidate's 12 images a request (10 a step) so that the client
    # builds the next candidate while the server answers, where one at a time packs 3 requests of 40
    assert one["train"]["images"] == three["train"]["images"] == 4 * PER_STEP
    assert one["train"]["cost"] == three["train"]["cost"]
    assert (one["train"]["requests"], three["train"]["requests"]) == (4 * 3 + 1, 4 * 10 + 1)
    sequential, pipelined = RunDir(tmp_path / "one"), RunDir(tmp_path / "three")
    for name, tensor in sequential.load_checkpoint()["prompter"].items():
        assert torch.equal(pipelined.load_checkpoint()["prompter"][name], tensor), name
    losses = [line["loss"] for line in sequential.metric_lines()]
    assert losses == [line["loss"] for line in pipelined.metric_lines()]
    # a run stopped at step 2 and resumed with another in-flight setting ends at the same prompt
    train(server, dataset, tmp_path / "mixed", "--steps", "2", *every, "--in-flight", "2")
    train(server, dataset, tmp_path / "mixed", "--steps", "4", *every, "--resume")
    for name, tensor in sequential.load_checkpoint()["prompter"].items():
        assert torch.equal(RunDir(tmp_path / "mixed").load_checkpoint()["prompter"][name], tensor), name


def test_info_and_usage_print_the_servers_json(server, dataset, tmp_path) -> None:
    info = blackvip("info", "--url", server.url)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert shown["price_per_1k_images"] == PRICE and shown["max_batch_images"] == MAX_BATCH_IMAGES
    train(server, dataset, tmp_path / "run", "--steps", "1")
    usage = blackvip("usage", "--url", server.url)
    assert usage.returncode == 0, usage.stderr
    with BlackVIPClient(server.url) as api:
        counted = api.usage()
    assert json.loads(usage.stdout)["total"]["images"] == counted.total.images >= PER_STEP


def test_a_config_file_sets_anything_and_flags_win(server, dataset, tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('steps = 3\nseed = 5\nbatch-size = 6\nwire_dtype = "uint8"\n')
    summary = train(server, dataset, tmp_path / "run", "--config", str(config), "--steps", "1")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert summary["steps"] == 1 and saved["steps"] == 1  # the flag beat the file
    assert saved["seed"] == 5 and saved["wire_dtype"] == "uint8"  # the file beat the defaults
    assert saved["batch_size"] == BATCH  # train() passes --batch-size: the flag beat the file again


def test_mae_encoder_trains_through_train_from_a_local_folder(server, dataset, tmp_path) -> None:
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "mae"
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8,
    )  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    extra = ("--steps", "2", "--encoder", "mae", "--encoder-path", str(folder))
    summary = train(server, dataset, tmp_path / "run", *extra)
    assert summary["steps"] == 2 and summary["train"]["images"] == 2 * PER_STEP
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["encoder"] == "mae"


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("kind", ["loc-digits-1x4", "loc-mnist", "biased-mnist"])
def test_data_writes_image_folders_that_train_reads(server, tmp_path, kind) -> None:
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 6:22, 8:20] = rng.integers(1, 256, size=(n, 16, 12))
        _write_idx(mnist / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    out = tmp_path / kind
    preset = ["--preset", "biased_mnist_08"] if kind == "biased-mnist" else []  # one rho pair into ROOT
    made = blackvip("data", kind, "--out", str(out), "--mnist", str(mnist), *preset)
    assert made.returncode == 0, made.stderr
    assert Path(made.stdout.strip()) == out
    for split in ("train", "test"):
        classes = sorted(p.name for p in (out / split).iterdir() if p.is_dir())
        assert len(classes) == 10, (split, classes)
        assert all(any((out / split / name).iterdir()) for name in classes)
    summary = train(server, out, tmp_path / "run", "--steps", "1", "--shots", "2")
    assert summary["evaluations"]["test"]["images"] == sum(
        1 for p in (out / "test").rglob("*") if p.is_file()
    )


def test_augment_is_refused_on_image_folders(server, dataset, tmp_path) -> None:
    argv = ["train", "--url", server.url, "--data", str(dataset), "--out", str(tmp_path / "run")]
    done = blackvip(*argv, "--augment", "true", "--steps", "1")
    assert done.returncode == 1
    assert "--augment applies to benchmark datasets" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_pyproject_ships_the_presets_the_cli_reads() -> None:
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["client.training"] == ["presets.toml"]
    assert (root / "client" / "training" / "presets.toml").is_file()
