"""Run logs against the real server on loopback: `blackvip train --tensorboard` leaves one point per step
for each tag, also after a `kill -9` and a resume, and `blackvip report` tabulates and draws real runs."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.training.rundir import RunDir
from tests.e2e.test_training import blackvip, train_argv
from tests.helpers import ServerProcess, make_image_folder, read_scalars, tiny_argv

TRAIN_TAGS = {
    "train/loss": "loss",
    "train/accuracy": "accuracy",
    "train/lr": "lr",
    "train/images": "train_images",
    "train/cost": "cost",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("server")
    # a price, so that cost is not zero everywhere
    argv = tiny_argv(folder / "ledger.sqlite3", "--price-per-1k-images", "0.37")
    process = ServerProcess(argv, log_path=folder / "server.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


def kill_when(out: Path, argv: list[str], ready) -> None:
    """Start ``blackvip train``, SIGKILL it once ``ready(metric lines written)`` holds."""
    job = subprocess.Popen(
        [sys.executable, "-m", "client.cli", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and ready(len(metrics.read_text().splitlines()))):
        assert time.monotonic() < deadline and job.poll() is None, "job ended before it could be killed"
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()


def assert_one_point_per_step(run: RunDir, steps: list[int]) -> dict[str, list[tuple[int, float]]]:
    """Each training tag has exactly one point per step, equal to the step's metric line."""
    points = read_scalars(run.tensorboard)
    lines = run.metric_lines()
    assert [line["step"] for line in lines] == steps
    for tag, key in TRAIN_TAGS.items():
        assert [step for step, _ in points[tag]] == steps, tag
        values = np.float32([value for _, value in points[tag]])
        assert np.array_equal(values, np.float32([line[key] for line in lines])), tag
    return points


def test_tensorboard_has_one_point_per_step_after_a_kill_and_resume(server, dataset, tmp_path) -> None:
    out = tmp_path / "run"
    common = ("--steps", "20", "--checkpoint-every", "5", "--eval-every", "5", "--seed", "3", "--tensorboard")
    argv = train_argv(server, dataset, out, *common)
    # killed 2-3 steps after a checkpoint: the scalars then hold steps the checkpoint has not seen
    kill_when(out, argv, lambda written: written >= 7 and written % 5 in (2, 3))
    run = RunDir(out)
    killed_at = run.load_checkpoint()["step"]
    written = read_scalars(run.tensorboard)["train/loss"]
    assert 5 <= killed_at < written[-1][0] < 20  # the steps a resume computes again

    resumed = blackvip(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    points = assert_one_point_per_step(run, list(range(1, 21)))
    assert len([p for p in run.tensorboard.iterdir() if "tfevents" in p.name]) == 1
    evaluations = [line for line in run.eval_lines() if line["split"] == "test"]
    assert [line["step"] for line in evaluations] == [0, 5, 10, 15, 20]
    assert [step for step, _ in points["test/accuracy"]] == [0, 5, 10, 15, 20]  # 20: also the final one
    accuracy = np.float32([line["accuracy"] for line in evaluations])
    assert np.array_equal(np.float32([value for _, value in points["test/accuracy"]]), accuracy)
    summary = json.loads(resumed.stdout)
    assert points["test/accuracy"][-1][1] == np.float32(summary["evaluations"]["test"]["accuracy"])
    assert points["train/cost"][-1][1] == np.float32(summary["train"]["cost"]) > 0


def test_a_job_killed_before_its_first_checkpoint_starts_again_without_repeats(
    server, dataset, tmp_path
) -> None:
    out = tmp_path / "run"
    argv = train_argv(server, dataset, out, "--steps", "6", "--checkpoint-every", "100", "--tensorboard")
    kill_when(out, argv, lambda written: written >= 2)
    run = RunDir(out)
    assert run.load_checkpoint() is None and run.metric_lines()
    again = blackvip(*argv, "--resume")  # nothing to resume: the job starts again
    assert again.returncode == 0, again.stderr
    assert_one_point_per_step(run, list(range(1, 7)))


def test_report_tabulates_and_draws_two_real_runs(server, dataset, tmp_path) -> None:
    trained = blackvip(
        *train_argv(
            server, dataset, tmp_path / "blackvip", "--steps", "6", "--eval-every", "3", "--seed", "2"
        )
    )
    assert trained.returncode == 0, trained.stderr
    zero = blackvip(*train_argv(server, dataset, tmp_path / "zeroshot", "--method", "zeroshot"))
    assert zero.returncode == 0, zero.stderr
    runs = [tmp_path / "blackvip", tmp_path / "zeroshot"]
    done = blackvip("report", *map(str, runs), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr

    picture = tmp_path / "report" / "report.png"
    assert f"picture: {picture}" in done.stdout
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > image.height  # two panels side by side
    table = (tmp_path / "report" / "report.md").read_text()
    assert table in done.stdout
    cells = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    with (tmp_path / "report" / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(cells) == len(rows) == 2
    for path, row, cell in zip(runs, rows, cells, strict=True):
        summary = json.loads((path / "summary.json").read_text())
        accuracy = summary["evaluations"]["test"]["accuracy"]
        train, evaluation = summary["train"], summary["eval"]
        expected = [
            str(path),
            summary["method"],
            dataset.name,  # no preset: the data folder's name
            "2" if summary["method"] == "blackvip" else "1",
            f"{100 * accuracy:.2f}",
            f"{train['images']:,}",
            f"{train['requests'] + evaluation['requests']:,}",
            f"{train['cost']:.4f}",
            f"{train['cost'] + evaluation['cost']:.4f}",
        ]
        assert [c.strip() for c in cell] == expected
        assert float(row["test_accuracy"]) == accuracy and int(row["train_images"]) == train["images"]
        assert float(row["cost"]) == train["cost"] + evaluation["cost"]
    assert json.loads(trained.stdout)["train"]["images"] > 0
