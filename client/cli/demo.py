"""``blackvip demo``: zero-shot, then BlackVIP, on an offline Loc task (by default on real MNIST digits)
through a real server.

Starts ``blackvip-server`` on the small CLIP made here (unless ``--url`` names one), writes the task's
image folders, runs both jobs, prints a table and plots test accuracy against training images queried.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from client._exceptions import BlackVIPError
from client.local_server import local_server
from client.training.config import build_config
from client.training.loop import JobResult, run_job
from digits import TASK_NAMES
from digits.tasks import write_task_folder

__all__ = ["render_table", "run_demo"]

log = logging.getLogger(__name__)


def run_demo(args: argparse.Namespace) -> Path:
    """Both jobs in a fresh folder under ``--workdir``; returns that folder."""
    if args.task not in TASK_NAMES:
        raise BlackVIPError(f"unknown task {args.task!r}; choose one of {', '.join(TASK_NAMES)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = write_task_folder(args.task, args.workdir / "data" / args.task)
    run_root = args.workdir / time.strftime("%Y%m%d-%H%M%S")
    if args.url:
        results = _jobs(args, args.url, data, run_root)
    else:
        with local_server(args.workdir) as url:
            results = _jobs(args, url, data, run_root)
    table = render_table(results)
    (run_root / "results.md").write_text(table)
    print(table)
    plot = _plot(results, run_root / "accuracy_vs_images.png", args.task)
    print(f"plot: {plot}\nruns: {run_root}")
    return run_root


def _jobs(args: argparse.Namespace, url: str, data: Path, run_root: Path) -> dict[str, JobResult]:
    results = {}
    for method in ("zeroshot", "blackvip"):
        config = build_config(
            {
                "url": url,
                "api_key": args.api_key,
                "method": method,
                "dataset": args.task,
                "data": data,
                "out": run_root / method,
                "seed": args.seed,
                "steps": args.steps,
                "eval_every": args.eval_every,
            }
        )
        log.info("running %s", method)
        results[method] = run_job(config)
    return results


def render_table(results: dict[str, JobResult]) -> str:
    rows = [
        "| method | test accuracy | training images queried | requests | cost | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, result in results.items():
        summary = result.summary
        train, evaluation = summary.train, summary.eval
        rows.append(
            f"| {method} | {summary.evaluations['test']['accuracy']:.4f} | {train.images:,} | "
            f"{train.requests + evaluation.requests:,} | {train.cost + evaluation.cost:.2f} | "
            f"{summary.wall_time:.1f} |"
        )
    return "\n".join(rows) + "\n"


def _plot(results: dict[str, JobResult], path: Path, task: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    zero = results["zeroshot"].summary.evaluations["test"]["accuracy"]
    curve = results["blackvip"].run.eval_lines()
    axes.plot(
        [p["train_images"] for p in curve], [p["accuracy"] for p in curve], marker="o", label="BlackVIP"
    )
    axes.axhline(zero, color="grey", linestyle="--", label=f"zero-shot ({zero:.3f})")
    axes.set(xlabel="training images queried", ylabel="test accuracy", title=f"{task} through the API")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
