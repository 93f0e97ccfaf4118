"""What adaptation costs when the API reveals less: BlackVIP and VP trained at each access level
(logits, top-5 with probabilities, top-1 with its probability, the label only) at equal training-image
budgets, over several seeds, every job through a real toy-digits server started here under its own key.

    python bench/access_levels.py                                         # the issue's full grid
    python bench/access_levels.py --tasks loc-mnist-digits-1x1 --seeds 1 2 --budgets 64000 160000
    python bench/access_levels.py --report-only                           # tabulate finished jobs

At levels logits (the default) the server computes the loss (``/loss``); at the others the client asks
``/logits`` for what the level reveals and computes the loss itself (``client/training/levels.py``). Each
job evaluates val and test at every budget through its own task, so at level label the test accuracy is
read from labels alone. The harness is bench/query_efficiency.py's: finished jobs are reused, stopped ones
resume, and each job's ledger record (``ledger.json``) is compared with its own meter in the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from access_levels_report import LEVELS_ORDER, write_report
from query_efficiency import run_jobs, run_length

from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob
from client.training.plan import images_per_step
from client.training.rundir import RunDir
from digits.tasks import write_task_folder

__all__ = ["LEVELS", "job_config", "main", "plan"]


BUDGETS = (64_000, 160_000, 640_000, 1_280_000)  # training images
METHODS = ("blackvip", "vp-spsa")
# what each studied level asks of the server at registration (shared.access.Access)
LEVELS: dict[str, dict[str, Any]] = {
    "logits": {"access_level": "logits"},
    "top-5": {"access_level": "top-k", "top_k": 5},
    "top-1": {"access_level": "top-k", "top_k": 1},
    "label": {"access_level": "label"},
}
assert tuple(LEVELS) == LEVELS_ORDER


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/access_levels.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["loc-mnist-digits-1x1", "loc-digits-1x1"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="training images")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-access-levels"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/access_levels.md"))
    parser.add_argument("--note", default="", help="a paragraph to put above the report's tables")
    parser.add_argument("--report-only", action="store_true", help="tabulate finished jobs, run nothing")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[GridJob]:
    """A job per task, method, level and seed in WORKDIR/<task>/<method>-<level>/seed<S>."""
    jobs = []
    for task in args.tasks:
        for method in args.methods:
            for level in args.levels:
                for seed in args.seeds:
                    out = RunDir(args.workdir / task / f"{method}-{level}" / f"seed{seed}")
                    jobs.append(GridJob(task, method, seed, out, variant=f"{method}-{level}"))
    return jobs


def job_key(job: GridJob) -> str:
    return f"al-{job.dataset}-{job.label}-seed{job.seed}"


def job_config(args: argparse.Namespace, url: str, job: GridJob) -> TrainConfig:
    level = job.label.removeprefix(f"{job.method}-")
    base = {
        "url": url,
        "api_key": job_key(job),
        "dataset": job.dataset,
        "data": write_task_folder(job.dataset, args.workdir / "data" / job.dataset),
        "method": job.method,
        "seed": job.seed,
        "out": job.out.path,
        "eval_splits": ["val", "test"],
    }
    config = build_config({**base, **LEVELS[level]})
    return config.model_copy(update=run_length(args.budgets, images_per_step(config), job.label))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_jobs(args.workdir, plan(args), partial(job_config, args), job_key)
    print(write_report(args.workdir, args.methods, sorted(args.budgets), args.note, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
