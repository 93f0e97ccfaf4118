"""Zero-shot, BlackVIP, VP with SPSA-GC and BAR on the offline digit tasks at equal training-image
budgets, over several seeds, through a real server; writes a markdown table of mean and std accuracy
and the queries spent.

    python bench/synthetic.py                         # starts its own toy-digits server
    python bench/synthetic.py --url http://HOST:PORT  # or uses one

Finished jobs (a summary.json in their folder) are reused, so an interrupted run continues where it
stopped. On each of ``--long-tasks`` BlackVIP also runs to ``--long-steps`` with a test evaluation every
100 steps, giving its accuracy at 500 and 1,000 steps (``blackvip demo`` defaults to the task measured
this way).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from client.local_server import local_server
from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob, InProcessExecutor, finished_summaries, plan_grid, run_grid
from client.training.rundir import RunDir, Summary
from digits.tasks import write_task_folder

EVALS_PER_STEP = {"blackvip": 10, "vp-spsa": 10, "bar": 6, "zeroshot": 0}  # q = 5: 2q or q + 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/synthetic.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing server (default: start toy-digits locally)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[
            "loc-digits-1x1",
            "loc-digits-1x4",
            "biased-digits-08",
            "biased-digits-09",
            "loc-mnist-digits-1x1",
            "loc-mnist-digits-1x4",
            "biased-mnist-digits-08",
            "biased-mnist-digits-09",
        ],
    )
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "blackvip", "vp-spsa", "bar"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--budget-steps",
        type=int,
        default=300,
        help="the budget, in BlackVIP steps: budget images = steps x batch x 2q",
    )
    parser.add_argument("--long-tasks", nargs="*", default=["loc-digits-1x1", "loc-mnist-digits-1x1"])
    parser.add_argument("--long-steps", type=int, default=1000)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="requests of a step outstanding at once (training is bit-identical; only the wall time changes)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-synthetic"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/synthetic.md"))
    parser.add_argument("--report-only", action="store_true", help="tabulate finished jobs, run nothing")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace, url: str, job: GridJob) -> TrainConfig:
    budget = args.budget_steps * args.batch_size * EVALS_PER_STEP["blackvip"]
    values = {
        "url": url,
        "method": job.method,
        "dataset": job.dataset,
        "data": write_task_folder(job.dataset, args.workdir / "data" / job.dataset),  # kept if complete
        "seed": job.seed,
        "batch_size": args.batch_size,
        "out": job.out.path,
        "in_flight": args.in_flight,
    }
    if job.method == "blackvip" and job.dataset in args.long_tasks:
        values.update(steps=args.long_steps, eval_every=math.gcd(100, args.budget_steps))
    elif job.method != "zeroshot":
        values.update(steps=budget // (args.batch_size * EVALS_PER_STEP[job.method]), budget_images=budget)
    return build_config(values)


def plan(args: argparse.Namespace) -> list[GridJob]:
    return plan_grid(args.workdir, args.tasks, args.methods, args.seeds)


def run_all(args: argparse.Namespace, url: str) -> None:
    run_grid(plan(args), InProcessExecutor(partial(job_config, args, url)))


def finished(args: argparse.Namespace) -> dict[tuple[str, str, int], Summary]:
    """The summaries of the jobs that have finished, by (task, method, seed)."""
    return {(job.dataset, job.method, job.seed): s for job, s in finished_summaries(plan(args)).items()}


def accuracy_at(run_dir: Path, train_images: int) -> float:
    """Test accuracy from the learning curve at exactly ``train_images`` images queried."""
    for point in RunDir(run_dir).eval_lines():
        if point["train_images"] == train_images:
            return point["accuracy"]
    raise ValueError(f"{run_dir} has no evaluation at {train_images} training images")


def _spent_at(run_dir: Path, summary: Summary, budget: int) -> dict[str, float]:
    """Training images, requests and cost up to the budget (a long run goes past it)."""
    lines = RunDir(run_dir).metric_lines()
    within = [line for line in lines if line["train_images"] <= budget]
    if not within:
        train = summary.train
        return {"train_images": train.images, "requests": train.requests, "cost": train.cost}
    return {key: within[-1][key] for key in ("train_images", "requests", "cost")}


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def render(args: argparse.Namespace, results: dict[tuple[str, str, int], Summary]) -> str:
    budget = args.budget_steps * args.batch_size * EVALS_PER_STEP["blackvip"]
    lines = [
        f"Equal budget: {budget:,} training images per job (BlackVIP/VP: {args.budget_steps} steps, "
        f"BAR: {budget // (args.batch_size * 6)} steps; batch {args.batch_size}). Test accuracy (%) "
        f"mean ± std over the seeds that finished; training queries up to the budget, means over seeds.",
        "",
        "| task | method (seeds) | test accuracy | gain vs zero-shot | training images | requests | cost |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task in args.tasks:
        for method in args.methods:
            seeds = [
                s for s in args.seeds if (task, method, s) in results and (task, "zeroshot", s) in results
            ]
            if not seeds:
                continue
            zero = [results[task, "zeroshot", s].evaluations["test"]["accuracy"] for s in seeds]
            runs = [results[task, method, s] for s in seeds]
            if method == "blackvip" and task in args.long_tasks:
                accs = [accuracy_at(args.workdir / task / method / f"seed{s}", budget) for s in seeds]
            else:
                accs = [r.evaluations["test"]["accuracy"] for r in runs]
            gain = [a - z for a, z in zip(accs, zero, strict=True)]
            spent = [
                _spent_at(args.workdir / task / method / f"seed{s}", r, budget)
                for s, r in zip(seeds, runs, strict=True)
            ]
            lines.append(
                f"| {task} | {method} ({len(seeds)}) | {mean_std(accs)} | {mean_std(gain)} | "
                f"{statistics.mean(x['train_images'] for x in spent):,.0f} | "
                f"{statistics.mean(x['requests'] for x in spent):,.0f} | "
                f"{statistics.mean(x['cost'] for x in spent):.1f} |"
            )
    for task in args.long_tasks:
        lines += _long_curve(args, results, task)
    return "\n".join(lines) + "\n"


def _long_curve(
    args: argparse.Namespace, results: dict[tuple[str, str, int], Summary], task: str
) -> list[str]:
    if "blackvip" not in args.methods or task not in args.tasks:
        return []
    seeds = [s for s in args.seeds if (task, "blackvip", s) in results and (task, "zeroshot", s) in results]
    zero = [results[task, "zeroshot", s].evaluations["test"]["accuracy"] for s in seeds]
    lines = [
        "",
        f"BlackVIP on {task} by steps (test accuracy %, mean ± std over seeds):",
        "",
        "| steps | training images | test accuracy | gain vs zero-shot |",
        "|---:|---:|---:|---:|",
    ]
    for steps in range(100, args.long_steps + 1, 100):
        images = steps * args.batch_size * EVALS_PER_STEP["blackvip"]
        accs = [accuracy_at(args.workdir / task / "blackvip" / f"seed{s}", images) for s in seeds]
        gain = [a - z for a, z in zip(accs, zero, strict=True)]
        lines.append(f"| {steps} | {images:,} | {mean_std(accs)} | {mean_std(gain)} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        if args.url:
            run_all(args, args.url)
        else:
            with local_server(args.workdir) as url:
                run_all(args, url)
    table = render(args, finished(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
