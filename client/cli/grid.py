"""``blackvip bench``: a grid of jobs (datasets x methods x seeds) against one server; its flags.

Each job is a ``blackvip train`` subprocess writing to ``WORKDIR/<dataset>/<method>/seed<S>``;
``--concurrency`` of them run at once, here, or (``--executor ray``) each is a Ray task on a cluster
(``--ray-address``) or on a Ray started here. A job with a ``summary.json`` is finished and skipped; one
with a checkpoint is resumed (:mod:`client.training.grid`). At the end the table (markdown and CSV:
mean and std test accuracy, training images, requests, cost, wall time) and one plot per dataset (test
accuracy against training images queried) are written to WORKDIR (:mod:`client.training.grid_report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from client._exceptions import BlackVIPError
from client.training.config import ENCODERS
from client.training.grid import Executor, LocalExecutor, plan_grid, run_grid
from client.training.grid_report import write_report

__all__ = ["add_bench_flags", "add_plan_flags", "executor_for", "run_bench", "train_flags"]

_PASSED_ON = (
    "steps",
    "epochs",
    "budget_images",
    "batch_size",
    "shots",
    "eval_every",
    "subsample_classes",
    "encoder",
    "encoder_path",
    "checkpoint_every",
)


def add_plan_flags(parser: argparse.ArgumentParser, data_required: bool) -> None:
    """The grid and its run length: shared by ``bench`` and ``plan``."""
    help_data = "$DATA: the folder holding the datasets" + (
        "" if data_required else " (sizes read if present)"
    )
    parser.add_argument("--data", type=Path, required=data_required, help=help_data)
    parser.add_argument("--datasets", nargs="+", required=True, help="preset names, e.g. eurosat dtd")
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "blackvip", "vp-spsa", "bar"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--shots", type=int, help="default: each preset's (16)")
    parser.add_argument("--epochs", type=int, help="default: each dataset's preset (the seed's epochs)")
    parser.add_argument("--steps", type=int, help="overrides --epochs and the presets")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--eval-every", type=int, help="steps between test evaluations (curves)")
    parser.add_argument("--subsample-classes", choices=["all", "base", "new"], help="base-to-new split")
    parser.add_argument("--price", type=float, help="price per 1,000 images (default: the server's)")


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    add_plan_flags(parser, data_required=True)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    parser.add_argument(
        "--concurrency", type=int, default=1, help="jobs running at once (local, or on a Ray started here)"
    )
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: subprocesses here; ray: one Ray task per job (pip install 'blackvip-sim[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        help="a running Ray cluster (ray start --head prints it); default: start Ray here (--executor ray)",
    )
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (resumable jobs)")
    parser.add_argument("--budget-images", type=int, help="training images per job")
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        help="the blackvip jobs' Coordinator encoder (default: each preset's; mae for the benchmarks)",
    )
    parser.add_argument("--encoder-path", type=Path, help="a local copy of the blackvip jobs' encoder")
    parser.add_argument("--dry-run", action="store_true", help="print the cost plan and run nothing")


def run_bench(args: argparse.Namespace) -> Path:
    """Run the grid the flags describe (see :mod:`client.training.grid`), then write its table and plots."""
    jobs = plan_grid(args.workdir, args.datasets, args.methods, args.seeds)
    failed = run_grid(jobs, executor_for(args))
    print(write_report(jobs, args.workdir))
    if failed:
        names = ", ".join(f"{job.name} (see {job.out.log})" for job in failed)
        raise BlackVIPError(f"{len(failed)} job(s) failed: {names}; rerun the same command to resume them")
    return args.workdir / "results.md"


def executor_for(args: argparse.Namespace) -> Executor:
    """The flags' executor: subprocesses here (the default), or Ray tasks."""
    if args.executor == "local":
        if args.ray_address:
            raise BlackVIPError("--ray-address needs --executor ray")
        return LocalExecutor(train_flags(args), args.concurrency)
    from client.training.grid_ray import RayExecutor

    return RayExecutor(train_flags(args), address=args.ray_address, local_cpus=max(1, args.concurrency))


def train_flags(args: argparse.Namespace) -> list[str]:
    """The ``blackvip train`` flags every job of the grid gets."""
    flags = ["--data", str(args.data), "--fewshot-cache", str(args.workdir / "fewshot")]
    if args.url:
        flags += ["--url", args.url]
    for name in _PASSED_ON:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags
