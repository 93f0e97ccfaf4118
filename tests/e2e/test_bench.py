"""`blackvip bench` on miniature datasets in the seed's exact layouts: 2 datasets x 2 methods x 2 seeds
against a real server. One job was killed part way before the grid starts; the grid is killed after its
first finished job and run again to completion: the stopped job resumes from its checkpoint's step, the
finished one is not run twice, and the table agrees with the jobs' own summaries."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.training.rundir import RunDir
from tests.client.data.test_datasets import BUILDERS
from tests.helpers import ServerProcess, tiny_argv

DATASETS = ("eurosat", "dtd")
METHODS = ("zeroshot", "blackvip")
SEEDS = ("1", "2")
# The presets' mae needs weights; the seed's scratch Coordinator runs offline.
RUN = ["--steps", "3", "--batch-size", "4", "--shots", "2", "--encoder", "scratch"]


def _wait_for(path: Path, process: subprocess.Popen[bytes], what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert time.monotonic() < deadline and process.poll() is None, f"{what} never happened"
        time.sleep(poll)


def _kill_part_way(url: str, data: Path, workdir: Path) -> RunDir:
    """eurosat/blackvip/seed1 as the grid would run it, but checkpointing every step, killed at its
    first checkpoint: a job stopped part way, with a checkpoint and no summary."""
    run = RunDir(workdir / "eurosat" / "blackvip" / "seed1")
    argv = [sys.executable, "-m", "client.cli", "train", "--dataset", "eurosat", "--method", "blackvip"]
    argv += ["--seed", "1", "--data", str(data), "--out", str(run.path), "--url", url, *RUN]
    argv += ["--fewshot-cache", str(workdir / "fewshot"), "--checkpoint-every", "1"]
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(run.checkpoint, job, "the first checkpoint", poll=0.005)
    finally:
        job.kill()
        job.wait()
    assert not run.finished(), "the job ran to its end before it could be killed"
    return run


def _bench_argv(url: str, data: Path, workdir: Path) -> list[str]:
    argv = [sys.executable, "-m", "client.cli", "bench", "--url", url, "--data", str(data), "--workdir"]
    return argv + [str(workdir), "--datasets", *DATASETS, "--methods", *METHODS, "--seeds", *SEEDS, *RUN]


def test_bench_grid_is_interrupted_resumed_and_tabulated(tmp_path: Path) -> None:
    data, workdir = tmp_path / "DATA", tmp_path / "bench"
    for name in DATASETS:
        BUILDERS[name](data)
    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log").start()
    argv = _bench_argv(server.url, data, workdir)
    try:
        stopped = _kill_part_way(server.url, data, workdir)
        checkpoint = stopped.load_checkpoint()
        assert checkpoint is not None
        stopped_at = checkpoint["step"]

        first = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        done_first = RunDir(workdir / "eurosat" / "zeroshot" / "seed1")
        _wait_for(done_first.summary, first, "the first job's end")
        os.killpg(first.pid, signal.SIGKILL)  # the bench and the job it is running
        first.wait()
        stamp = done_first.summary.stat().st_mtime_ns
        assert len(list(workdir.glob("*/*/seed*/summary.json"))) < 8  # the second run has work left

        again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr[-3000:]
    assert done_first.summary.stat().st_mtime_ns == stamp  # finished jobs are not run twice

    # The stopped job went on from its checkpoint's step: no step repeated, none missing, and its
    # meters carried over (3 steps x batch 4 x 2q training images in all, as if never stopped).
    assert f"resumed {stopped.path} at step {stopped_at}" in stopped.log.read_text()
    assert [line["step"] for line in stopped.metric_lines()] == [1, 2, 3]
    assert stopped.read_summary().steps == 3 and stopped.read_summary().train.images == 3 * 4 * 10

    _check_table(workdir)
    for name in DATASETS:
        assert (workdir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        for seed in SEEDS:
            assert (workdir / "fewshot" / name / f"shot_2-seed_{seed}.json").exists()


def _check_table(workdir: Path) -> None:
    """results.csv and results.md against figures recomputed here from the jobs' summary.json files."""
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert [(r["dataset"], r["method"]) for r in rows] == [(d, m) for d in DATASETS for m in METHODS]
    lines = (workdir / "results.md").read_text().splitlines()
    assert lines[0] == (
        "| dataset | method | seeds | test accuracy (%) | training images | forwards | requests | cost "
        "| wall (s) |"
    )
    assert len(lines) == 2 + len(rows)
    for row, line in zip(rows, lines[2:], strict=True):
        folders = [workdir / row["dataset"] / row["method"] / f"seed{seed}" for seed in SEEDS]
        runs = [json.loads((folder / "summary.json").read_text()) for folder in folders]
        accuracy = [100 * run["evaluations"]["test"]["accuracy"] for run in runs]
        expected = {
            "seeds": len(runs),
            "accuracy_mean": statistics.mean(accuracy),
            "accuracy_std": statistics.stdev(accuracy),
            "train_images": statistics.mean(run["train"]["images"] for run in runs),
            "forwards": statistics.mean(run["train"]["forwards"] for run in runs),
            "requests": statistics.mean(run["train"]["requests"] + run["eval"]["requests"] for run in runs),
            "cost": statistics.mean(run["train"]["cost"] + run["eval"]["cost"] for run in runs),
            "wall_time": statistics.mean(run["wall_time"] for run in runs),
        }
        assert {key: float(row[key]) for key in expected} == pytest.approx(expected)
        figures = (
            f"{expected['accuracy_mean']:.1f} ± {expected['accuracy_std']:.1f} | "
            f"{expected['train_images']:,.0f} | {expected['forwards']:,.0f} | {expected['requests']:,.0f} | "
            f"{expected['cost']:.2f} | {expected['wall_time']:.0f}"
        )
        assert line == f"| {row['dataset']} | {row['method']} | 2 | {figures} |"
        if row["method"] == "blackvip":
            assert expected["train_images"] == 3 * 4 * 10  # 3 steps x batch 4 x 2q
            assert expected["forwards"] == 3 * 10  # 3 steps x 2q perturbed batches
