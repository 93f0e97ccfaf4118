"""`blackvip demo` on a fresh folder, offline: it starts the toy-digits server itself, runs zero-shot and a
short seeded BlackVIP job on its default task (Loc on real MNIST digits), prints the table and writes the
plot. 30 steps are too few for the accuracy to move on this task (bench/results/synthetic.md: the gain over
zero-shot shows from ~300 steps); what they do move is the loss, on the training batches and on the test
set, where the prompt already puts more probability on the border digit than zero-shot does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from client.cli.demo import COMPARED


def test_demo_runs_offline_on_real_mnist_and_blackvip_learns(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.cli",
            "demo",
            "--steps",
            "30",
            "--eval-every",
            "10",
            "--seed",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "| method | test accuracy | training images queried | forwards | requests | cost | wall time (s) |"
        in done.stdout
    )
    task = json.loads((tmp_path / "data" / "loc-mnist-digits-1x1" / "task.json").read_text())
    assert task["spec"]["source"] == "mnist" and task["spec"]["kind"] == "loc"  # the default task
    (run_root,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name[0].isdigit()]
    plot = run_root / "accuracy_vs_images.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    zero = json.loads((run_root / "zeroshot" / "summary.json").read_text())
    vip = json.loads((run_root / "blackvip" / "summary.json").read_text())
    assert zero["train"]["images"] == 0 and vip["train"]["images"] == 30 * 128 * 10
    assert vip["train"]["forwards"] == 30 * 10
    losses = [
        json.loads(line)["loss"]
        for line in (run_root / "blackvip" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(losses[-10:]) < sum(losses[:10])  # the training loss went down
    assert vip["evaluations"]["test"]["loss"] < zero["evaluations"]["test"]["loss"]  # and the test loss
    curve = (run_root / "blackvip" / "evals.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == [0, 10, 20, 30]


def test_demo_compare_runs_each_named_optimiser_on_the_seeds_training_images(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "demo", "--compare", "--steps", "4", "--eval-every", "2"]
        + ["--seed", "2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_root,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name[0].isdigit()]
    seed = json.loads((run_root / "blackvip" / "summary.json").read_text())
    assert seed["train"]["images"] == 4 * 128 * 10
    points = [json.loads(line)["train_images"] for line in (run_root / "blackvip" / "evals.jsonl").open()]
    assert points == [0, 2560, 5120]
    for name in COMPARED:
        named = json.loads((run_root / f"blackvip-{name}" / "summary.json").read_text())
        config = json.loads((run_root / f"blackvip-{name}" / "config.json").read_text())["config"]
        assert config["optimizer"] == name
        assert named["train"]["images"] == seed["train"]["images"]  # the seed's training images
        per_forward = config["batch_size"]  # a forward: one batch, an SPSA side or an ES candidate
        assert named["train"]["forwards"] == 4 * 128 * 10 // per_forward
        evals = [json.loads(line) for line in (run_root / f"blackvip-{name}" / "evals.jsonl").open()]
        assert [p["train_images"] for p in evals] == [0, 2560, 5120]  # evaluated at the same points
    assert config["es_popsize"] == 20 and config["batch_size"] == 64  # the last: cma-es-d500's preset
    table = done.stdout
    for label in ("zeroshot", "blackvip", *(f"blackvip-{name}" for name in COMPARED)):
        assert f"| {label} | " in table
    assert (run_root / "accuracy_vs_images.png").read_bytes()[:4] == b"\x89PNG"
