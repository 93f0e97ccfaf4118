"""Soak: ``kill -9`` the server again and again during one training job. The job must finish, the
ledger must count exactly what the job's meters count, and the final prompt must equal that of an
uninterrupted run of the same job.

    python bench/soak_kill.py                    # 10 kills, BlackVIP on loc-digits-1x1 (~5 min)
    python bench/soak_kill.py --kills 3 --steps 40

One server (toy-digits, keys ``reference`` and ``soak``) on a fixed port and ledger. First the
reference job runs undisturbed; then the soaked job runs while a killer waits a random 1-4 s after
each restart, kills the server with SIGKILL (mostly mid-request: the server is busy most of the time)
and starts it again on the same port and ledger. The SDK retries each call under its request id,
so an answer charged just before a kill is replayed, not charged twice.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from client._sdk import BlackVIPClient
from client.local_server import LocalServer
from client.training.config import build_config
from client.training.loop import run_job
from client.training.rundir import RunDir
from digits.tasks import write_task_folder

KEYS = ("reference", "soak")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    return parser.parse_args(argv)


def job(args: argparse.Namespace, url: str, key: str, data: Path, out: Path):
    config = build_config(
        {
            "url": url,
            "api_key": key,
            "dataset": "loc-digits-1x1",
            "data": data,
            "method": "blackvip",
            "steps": args.steps,
            "seed": args.seed,
            "out": out,
            "max_wait_seconds": 300.0,
            "checkpoint_every": 25,
        }
    )
    return run_job(config)


def killer(server: LocalServer, kills: int, done: threading.Event, log: list[float]) -> None:
    rng = random.Random(0)
    while len(log) < kills and not done.wait(rng.uniform(1.0, 4.0)):
        server.kill9()
        log.append(time.monotonic())
        server.start()


def trainable(run_dir: Path) -> dict[str, torch.Tensor]:
    return RunDir(run_dir).load_checkpoint()["prompter"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        data = write_task_folder("loc-digits-1x1", work / "data")
        flags = ["--ledger", str(work / "ledger.sqlite3"), "--api-keys", ",".join(KEYS)]
        server = LocalServer(flags, log_path=work / "server.log").start()
        try:
            reference = job(args, server.url, "reference", data, work / "reference")
            done, kills = threading.Event(), []
            thread = threading.Thread(target=killer, args=(server, args.kills, done, kills))
            started = time.monotonic()
            thread.start()
            try:
                soaked = job(args, server.url, "soak", data, work / "soak")
            finally:
                done.set()
                thread.join()
            seconds = time.monotonic() - started
            with BlackVIPClient(server.url, "soak") as api:
                ledger = api.usage().total
        finally:
            server.stop()
        counted = soaked.train_meter.plus(soaked.eval_meter)
        same_prompt = all(
            torch.equal(value, trainable(soaked.run.path)[name])
            for name, value in trainable(reference.run.path).items()
        )
        print(
            "| kills | steps | wall s | client requests | ledger requests | client images | ledger images |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {len(kills)} | {soaked.summary.steps} | {seconds:.0f} | {counted.requests} | "
            f"{ledger.requests} | "
            f"{counted.images} | {ledger.images} |"
        )
        exact = counted.requests == ledger.requests and counted.images == ledger.images
        print(f"job finished: {soaked.steps == args.steps}; ledger == client: {exact}; "
              f"final prompt equal to the uninterrupted run's: {same_prompt}")  # fmt: skip
        return 0 if exact and same_prompt and soaked.steps == args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
