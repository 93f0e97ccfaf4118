"""`blackvip bench --executor ray --ray-address ADDR` on a real local Ray cluster (``ray start --head``:
2 CPUs, a small object store, on 127.0.0.1) against a real server: a 2 x 2 x 1 grid on miniature
datasets. The Ray worker running eurosat/blackvip is killed with SIGKILL part way; Ray runs the task
again, the job resumes from its checkpoint (no step repeated or missing), the grid completes with the
local executor's table and plots, and running it again runs nothing."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.training.rundir import RunDir
from tests.client.data.test_datasets import BUILDERS
from tests.helpers import ServerProcess, free_port, tiny_argv

pytestmark = pytest.mark.slow  # about 80 s on 2 cores: a Ray cluster, a server, four jobs, the grid twice

DATASETS = ("eurosat", "dtd")
METHODS = ("zeroshot", "blackvip")
STEPS = 20
RUN = [
    "--steps",
    str(STEPS),
    "--batch-size",
    "4",
    "--shots",
    "2",
    "--encoder",
    "scratch",
    "--checkpoint-every",
    "1",
]
BIN = Path(sys.executable).parent


def ray_env(folder: Path) -> dict[str, str]:
    """Ray resolves 127.0.0.1 to the machine's outward address unless told it has no cluster network:
    this keeps the head, its workers and the driver on loopback, the only network a test may use here.
    The head requires a token (as every Ray cluster should); driver and head share one made for it."""
    return {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(folder / "auth_token"),
    }


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on loopback in its own session; stopped by signalling that session's process group
    (only what it started), never with ``ray stop``, which stops every Ray on the machine. Its folder
    is short: Ray's sockets live there, and a socket path has at most 107 bytes."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    (folder / "auth_token").write_text(secrets.token_hex(32))
    argv = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--num-cpus=2", f"--object-store-memory={100 * 2**20}", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={folder}"]  # fmt: skip
    log = (tmp_path / "ray-head.log").open("wb")
    head = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ray_env(folder)
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head never listened"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", ray_env(folder)
    finally:
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(head.pid):
                time.sleep(0.2)
        head.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(name, parent pid, process group) from /proc/PID/stat, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
    return name, int(rest[1]), int(rest[2])


def _group_alive(pgid: int) -> bool:
    return any((stat := _stat(pid)) is not None and stat[2] == pgid for pid in _pids())


def _train_process(out: Path) -> int | None:
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in cmdline and str(out).encode() in cmdline:
            return pid
    return None


def _kill_its_worker(run: RunDir, bench: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait until the job has a checkpoint and steps left, then SIGKILL the Ray worker running it."""
    deadline = time.monotonic() + 300
    while True:
        if bench.poll() is not None:
            raise AssertionError(
                f"the bench ended first ({bench.returncode}): {bench.communicate()[1][-3000:]}"
            )
        assert time.monotonic() < deadline, "the job never reached a checkpoint"
        train = _train_process(run.path)
        if train is not None and run.checkpoint.exists():
            break
        time.sleep(0.01)
    stat = _stat(train)
    assert stat is not None
    worker = _stat(stat[1])
    assert worker is not None and worker[0].startswith("ray::"), worker  # the task's worker process
    steps = len(run.metric_lines())
    os.kill(stat[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _stat(train) is not None and _stat(train)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)  # tied to its worker: it dies too, no orphan keeps writing
    assert _train_process(run.path) != train
    return steps, worker[0]


def test_a_grid_on_ray_survives_a_killed_worker_and_resumes_the_job(ray_head, tmp_path: Path) -> None:
    address, env = ray_head
    data, workdir = tmp_path / "DATA", tmp_path / "bench"
    for name in DATASETS:
        BUILDERS[name](data)
    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log").start()
    argv = [sys.executable, "-m", "client.cli", "bench", "--url", server.url, "--data", str(data),
            "--workdir", str(workdir), "--datasets", *DATASETS, "--methods", *METHODS, "--seeds", "1", *RUN,
            "--executor", "ray", "--ray-address", address]  # fmt: skip
    victim = RunDir(workdir / "eurosat" / "blackvip" / "seed1")
    started = time.monotonic()
    try:
        bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            steps_at_kill, worker = _kill_its_worker(victim, bench)
            stdout, stderr = bench.communicate(timeout=600)
        finally:
            if bench.poll() is None:
                bench.kill()
        elapsed = time.monotonic() - started
        assert bench.returncode == 0, stderr[-3000:]
        again = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 finished already, 0 to run" in again.stderr

    assert 0 < steps_at_kill < STEPS
    log = victim.log.read_text()
    assert log.count("resumed ") == 1 and f"resumed {victim.path} at step" in log
    assert [line["step"] for line in victim.metric_lines()] == list(range(1, STEPS + 1))
    assert victim.read_summary().steps == STEPS and victim.read_summary().train.images == STEPS * 4 * 10
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert [(r["dataset"], r["method"]) for r in rows] == [(d, m) for d in DATASETS for m in METHODS]
    for name in DATASETS:
        assert (workdir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "results.md" in stdout
    print(
        f"\nray: 2x2x1 grid in {elapsed:.1f} s; killed {worker} at step {steps_at_kill} of {STEPS}; resumed"
    )
