"""The Coordinator encoders that run offline (the seed's ``scratch`` and this project's
``random-pooled``) on one digit task over several seeds, through a real server, at the demo's settings:
the task's preset, ``--steps`` BlackVIP steps, batch 128. Writes a markdown table of test accuracy
and macro-F1 (mean and std over seeds); it decides which encoder ``blackvip demo`` uses.

    python bench/encoders.py                         # starts its own toy-digits server
    python bench/encoders.py --url http://HOST:PORT  # or uses one

Finished jobs (a summary.json in their folder) are reused and a stopped one resumes from its checkpoint,
so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from client.local_server import local_server
from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob, InProcessExecutor, finished_summaries, plan_variants, run_grid
from client.training.rundir import Summary
from digits.tasks import write_task_folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/encoders.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing server (default: start toy-digits locally)")
    parser.add_argument("--task", default="loc-digits-1x1")
    parser.add_argument("--encoders", nargs="+", default=["random-pooled", "scratch"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=500, help="BlackVIP steps (the demo's default)")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between test evaluations (curve)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-encoders"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/encoders.md"))
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[GridJob]:
    """A BlackVIP job per encoder and seed, in WORKDIR/<task>/<encoder>/seed<S>."""
    return plan_variants(args.workdir, args.task, "blackvip", args.encoders, args.seeds)


def job_config(args: argparse.Namespace, url: str, data: Path, job: GridJob) -> TrainConfig:
    # No method: BlackVIP is the default, and the settings stay those the published table was run with.
    settings = {"url": url, "dataset": job.dataset, "data": data, "out": job.out.path, "seed": job.seed}
    run = {"steps": args.steps, "encoder": job.variant, "eval_every": args.eval_every}
    return build_config({**settings, **run})


def run_all(args: argparse.Namespace, url: str, data: Path) -> dict[str, list[Summary]]:
    jobs = plan(args)
    run_grid(jobs, InProcessExecutor(partial(job_config, args, url, data)))
    summaries: dict[str, list[Summary]] = {}
    for job, summary in finished_summaries(jobs).items():
        summaries.setdefault(job.label, []).append(summary)
    return summaries


def render(args: argparse.Namespace, summaries: dict[str, list[Summary]]) -> str:
    lines = [
        f"BlackVIP on {args.task}, {args.steps} steps (batch 128, q 5), seeds {args.seeds}; test split.",
        "",
        "| encoder | seeds | test accuracy (%) | macro-F1 (%) | per-seed accuracy (%) | training images |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for encoder, runs in summaries.items():
        accuracy = [100 * run.evaluations["test"]["accuracy"] for run in runs]
        f1 = [100 * run.evaluations["test"]["macro_f1"] for run in runs]
        spread = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
        lines.append(
            f"| {encoder} | {len(runs)} | {statistics.mean(accuracy):.1f} ± {spread(accuracy):.1f} | "
            f"{statistics.mean(f1):.1f} ± {spread(f1):.1f} | {', '.join(f'{a:.1f}' for a in accuracy)} | "
            f"{runs[0].train.images:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = write_task_folder(args.task, args.workdir / "data" / args.task)
    if args.url:
        summaries = run_all(args, args.url, data)
    else:
        with local_server(args.workdir) as url:
            summaries = run_all(args, url, data)
    table = render(args, summaries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
