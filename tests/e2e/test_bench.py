"""`blackvip bench` on miniature datasets in the seed's exact layouts: 2 datasets x 2 methods x 1 seed
against a real server, killed after its first finished job and run again to completion."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.client.data.test_datasets import BUILDERS
from tests.helpers import ServerProcess, tiny_argv

DATASETS = ("eurosat", "dtd")
METHODS = ("zeroshot", "blackvip")


def test_bench_grid_is_interrupted_resumed_and_tabulated(tmp_path: Path) -> None:
    data, workdir = tmp_path / "DATA", tmp_path / "bench"
    for name in DATASETS:
        BUILDERS[name](data)
    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log").start()
    argv = [
        sys.executable,
        "-m",
        "client.cli",
        "bench",
        "--url",
        server.url,
        "--data",
        str(data),
        "--datasets",
        *DATASETS,
        "--methods",
        *METHODS,
        "--seeds",
        "1",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--shots",
        "2",
        "--encoder",  # the presets' mae needs weights; the seed's scratch Coordinator runs offline
        "scratch",
        "--workdir",
        str(workdir),
    ]
    try:
        first = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        done_first = workdir / "eurosat" / "zeroshot" / "seed1" / "summary.json"
        deadline = time.monotonic() + 300
        while not done_first.exists():
            assert time.monotonic() < deadline and first.poll() is None, "the first job never finished"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the bench and the job it is running
        first.wait()
        stamp = done_first.stat().st_mtime_ns
        assert len(list(workdir.glob("*/*/seed1/summary.json"))) < 4  # the second run has work left

        again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr[-3000:]
    assert done_first.stat().st_mtime_ns == stamp  # finished jobs are not run twice
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert {(r["dataset"], r["method"]) for r in rows} == {(d, m) for d in DATASETS for m in METHODS}
    assert all(0.0 <= float(r["accuracy_mean"]) <= 100.0 for r in rows)
    blackvip = [r for r in rows if r["method"] == "blackvip"]
    assert all(float(r["train_images"]) == 3 * 4 * 10 for r in blackvip)  # 3 steps x batch 4 x 2q
    table = (workdir / "results.md").read_text()
    assert table.count("\n") == 2 + 4 and "| eurosat | blackvip |" in table
    for name in DATASETS:
        assert (workdir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (workdir / "fewshot" / name / "shot_2-seed_1.json").exists()
