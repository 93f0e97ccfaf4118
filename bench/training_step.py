"""One BlackVIP training step timed three ways in one run (issue 11, part a):

- **in-process**: the server's own model (``ClipBackend``, the shipped toy-digits) called in this
  process, behind the same loss oracle (no HTTP, no msgpack, no ledger);
- **API sequential**: through a real ``blackvip-server`` on loopback, one request at a time;
- **API pipelined**: the same with ``--in-flight`` requests outstanding while the next candidate's
  images are built.

Each runs twice: on **shared cores** (every process may use every core, torch's default threads) and
**pinned** (``taskset``: the client process on core 0, the server on core 1, one thread each; the
in-process cell then runs on core 0 alone). Pipelining can only pay where client and server have their
own compute, so the pinned rows are the test of the overlap. The API rows' final prompts are compared:
pipelined must be bit-identical to sequential.

    python bench/training_step.py                       # 20 timed steps per cell after 2 warm-up steps
    python bench/training_step.py --steps 4 --warmup 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from client.training.job import Job
    from client.training.objective import RemoteLoss

CORES = ("shared", "pinned")
MODES = ("in-process", "API sequential", "API pipelined")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A step: in-process vs API, sequential vs pipelined.")
    parser.add_argument("--task", default="loc-digits-1x1")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--max-batch-images", type=int, default=128, help="the server's per-request limit")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--child", choices=CORES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_cores(args, args.child)))
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        print("needs at least 2 cores: one for the client, one for the server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        results = {cores: _child(argv, cores, workdir) for cores in CORES}
    table = render(args, results)
    print(table)
    if args.out:
        args.out.write_text(table)
    identical = all(r["pipelined_identical"] for r in results.values())
    return 0 if identical else 1


def _child(argv: Sequence[str] | None, cores: str, workdir: Path) -> dict:
    """One configuration in its own process, so that pinning covers every thread torch starts."""
    launcher = ["taskset", "-c", "0"] if cores == "pinned" else []
    env = {**os.environ, **(_ONE_THREAD if cores == "pinned" else {})}
    command = [*launcher, sys.executable, __file__, *(argv or sys.argv[1:]), "--child", cores]
    command += ["--workdir", str(workdir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{cores} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cores(args: argparse.Namespace, cores: str) -> dict:
    from client.local_server import LocalServer
    from digits.tasks import write_task_folder

    root = args.workdir / cores
    data = write_task_folder(args.task, args.workdir / "data")
    flags = ["--ledger", str(root / "ledger.sqlite3"), "--max-batch-images", str(args.max_batch_images)]
    launcher = ("taskset", "-c", "1") if cores == "pinned" else ()
    env = _ONE_THREAD if cores == "pinned" else None
    root.mkdir(parents=True, exist_ok=True)
    server = LocalServer(flags, env=env, log_path=root / "server.log", launcher=launcher).start()
    try:
        cells = {mode: time_mode(args, server.url, data, root / mode, mode) for mode in MODES}
    finally:
        server.stop()
    sequential, pipelined = cells["API sequential"], cells["API pipelined"]
    return {
        "seconds": {mode: cell["seconds"] for mode, cell in cells.items()},
        "requests_per_step": {mode: cell["requests_per_step"] for mode, cell in cells.items()},
        "pipelined_identical": sequential["vector"] == pipelined["vector"],
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }


def time_mode(args: argparse.Namespace, url: str, data: Path, out: Path, mode: str) -> dict:
    from client.training.config import build_config
    from client.training.job import start_job
    from client.training.loop import train_step

    in_flight = args.in_flight if mode == "API pipelined" else 1
    values = {"url": url, "dataset": args.task, "data": data, "out": out, "batch_size": args.batch_size}
    config = build_config({**values, "in_flight": in_flight, "steps": args.warmup + args.steps})
    job = start_job(config, resume=False)
    if mode == "in-process":
        job.remote = _in_process_oracle(job)
    api = job.session.train_api
    seconds = []
    for step in range(args.warmup + args.steps):
        requests, started = api.meter.requests, time.perf_counter()
        train_step(job)
        if step >= args.warmup:
            seconds.append(time.perf_counter() - started)
        per_step = api.meter.requests - requests
    vector = job.state.prompter.get_vector().numpy()
    job.remote.close()
    job.session.close()
    median = statistics.median(seconds)
    return {"seconds": median, "requests_per_step": per_step, "vector": vector.tobytes().hex()}


class InProcessLoss:
    """The SDK's ``loss``, answered by the server's model in this process (no HTTP, no ledger)."""

    def __init__(self, class_names: list[str], templates: list[str]) -> None:
        from server.flags import parse_args as server_args
        from server.serving.clip_model import ClipBackend

        self.backend = ClipBackend.load(server_args([], env={}))  # the shipped toy-digits, as served
        self.text = self.backend.encode_texts([n.replace("_", " ") for n in class_names], templates)

    def loss(self, task_id: str, images: np.ndarray, labels: np.ndarray, kind: str, gamma: float) -> object:
        from client._sdk import LossResult
        from server.serving.clip_model import per_image_loss

        logits = self.backend.logits(images, self.text).logits
        return LossResult(*per_image_loss(logits, labels, str(kind), gamma))


def _in_process_oracle(job: Job) -> RemoteLoss:
    from client.training.objective import RemoteLoss

    api = InProcessLoss(job.inputs.class_names, job.config.templates)
    task, info = job.session.task_id or "", job.session.info
    return RemoteLoss(api, info, task, job.method.loss_kind, job.config.focal_gamma)  # type: ignore[arg-type]


def render(args: argparse.Namespace, results: dict[str, dict]) -> str:
    lines = [
        f"Task {args.task}, batch {args.batch_size}, {args.steps} timed steps per cell (median), "
        f"--in-flight {args.in_flight}, server --max-batch-images {args.max_batch_images}.",
        "",
        "| cores | mode | requests/step | s/step | in-process/this | API sequential/this |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cores, result in results.items():
        seconds = result["seconds"]
        for mode in MODES:
            lines.append(
                f"| {cores} | {mode} | {result['requests_per_step'][mode]} | {seconds[mode]:.3f} | "
                f"{seconds['in-process'] / seconds[mode]:.2f} | "
                f"{seconds['API sequential'] / seconds[mode]:.2f} |"
            )
    same = ", ".join(f"{c}: {'yes' if r['pipelined_identical'] else 'NO'}" for c, r in results.items())
    lines += ["", f"Pipelined prompt bit-identical to sequential after the run: {same}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
