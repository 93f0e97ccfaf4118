"""``blackvip bench``: a grid of jobs (datasets x methods x seeds) against one server.

Each job is a ``blackvip train`` subprocess writing to ``WORKDIR/<dataset>/<method>/seed<S>``;
``--concurrency`` of them run at once. A job with a ``summary.json`` is finished and skipped; one
with a checkpoint is resumed. At the end the table (markdown and CSV: mean and std test accuracy,
training images, requests, cost, wall time) and one plot per dataset (test accuracy against training
images queried) are written to WORKDIR.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from client._exceptions import BlackVIPError
from client.training.config import ENCODERS

__all__ = ["Job", "add_bench_flags", "add_plan_flags", "aggregate", "run_bench"]

log = logging.getLogger(__name__)

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
)


@dataclass(frozen=True)
class Job:
    dataset: str
    method: str
    seed: int
    out: Path

    @property
    def finished(self) -> bool:
        return (self.out / "summary.json").exists()


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
    parser.add_argument("--concurrency", type=int, default=1, help="jobs running at once")
    parser.add_argument("--budget-images", type=int, help="training images per job")
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        help="the blackvip jobs' Coordinator encoder (default: each preset's; mae for the benchmarks)",
    )
    parser.add_argument("--encoder-path", type=Path, help="a local copy of the blackvip jobs' encoder")
    parser.add_argument("--dry-run", action="store_true", help="print the cost plan and run nothing")


def plan(args: argparse.Namespace) -> list[Job]:
    return [
        Job(d, m, s, args.workdir / d / m / f"seed{s}")
        for d in args.datasets
        for m in args.methods
        for s in args.seeds
    ]


def job_argv(args: argparse.Namespace, job: Job) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "client.cli",
        "train",
        "--dataset",
        job.dataset,
        "--method",
        job.method,
        "--seed",
        str(job.seed),
        "--data",
        str(args.data),
        "--out",
        str(job.out),
        "--fewshot-cache",
        str(args.workdir / "fewshot"),
    ]
    if args.url:
        argv += ["--url", args.url]
    for name in _PASSED_ON:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if (job.out / "checkpoint.pt").exists():
        argv.append("--resume")
    return argv


def run_one(args: argparse.Namespace, job: Job) -> bool:
    job.out.mkdir(parents=True, exist_ok=True)
    log.info("start %s / %s / seed %d", job.dataset, job.method, job.seed)
    with (job.out / "job.log").open("ab") as output:
        code = subprocess.run(job_argv(args, job), stdout=output, stderr=subprocess.STDOUT).returncode
    log.info(
        "%s %s / %s / seed %d", "done" if code == 0 else f"FAILED ({code})", job.dataset, job.method, job.seed
    )
    return code == 0


def run_bench(args: argparse.Namespace) -> Path:
    jobs = plan(args)
    todo = [job for job in jobs if not job.finished]
    log.info("%d jobs, %d finished already, %d to run", len(jobs), len(jobs) - len(todo), len(todo))
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        outcomes = list(pool.map(lambda job: run_one(args, job), todo))
    failed = [job for job, ok in zip(todo, outcomes, strict=True) if not ok]
    table = aggregate(jobs, args.workdir)
    print(table)
    if failed:
        names = ", ".join(f"{j.dataset}/{j.method}/seed{j.seed} (see {j.out / 'job.log'})" for j in failed)
        raise BlackVIPError(f"{len(failed)} job(s) failed: {names}; rerun the same command to resume them")
    return args.workdir / "results.md"


def aggregate(jobs: list[Job], workdir: Path) -> str:
    """Write results.md, results.csv and a plot per dataset from the finished jobs; returns the table."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for job in jobs:
        if job.finished:
            groups.setdefault((job.dataset, job.method), []).append(
                json.loads((job.out / "summary.json").read_text())
            )
    rows = [_row(dataset, method, runs) for (dataset, method), runs in groups.items()]
    with (workdir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["dataset"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| dataset | method | seeds | test accuracy (%) | training images | requests | cost | wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['seeds']} | {row['accuracy_mean']:.1f} ± "
            f"{row['accuracy_std']:.1f} | {row['train_images']:,.0f} | {row['requests']:,.0f} | "
            f"{row['cost']:.2f} | {row['wall_time']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    (workdir / "results.md").write_text(table)
    for dataset in sorted({job.dataset for job in jobs}):
        _plot(dataset, [job for job in jobs if job.dataset == dataset and job.finished], workdir)
    return table


def _row(dataset: str, method: str, runs: list[dict]) -> dict:
    accuracy = [100 * run["evaluations"]["test"]["accuracy"] for run in runs]
    mean = statistics.mean
    return {
        "dataset": dataset,
        "method": method,
        "seeds": len(runs),
        "accuracy_mean": mean(accuracy),
        "accuracy_std": statistics.stdev(accuracy) if len(runs) > 1 else 0.0,
        "train_images": mean(run["train"]["images"] for run in runs),
        "requests": mean(run["train"]["requests"] + run["eval"]["requests"] for run in runs),
        "cost": mean(run["train"]["cost"] + run["eval"]["cost"] for run in runs),
        "wall_time": mean(run["wall_time"] for run in runs),
    }


def _plot(dataset: str, jobs: list[Job], workdir: Path) -> None:
    if not jobs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for method in sorted({job.method for job in jobs}):
        for index, job in enumerate(j for j in jobs if j.method == method):
            curve = _curve(job)
            axes.plot(
                *zip(*curve, strict=True),
                marker="o",
                label=method if index == 0 else None,
                color=f"C{sorted({j.method for j in jobs}).index(method)}",
            )
    axes.set(xlabel="training images queried", ylabel="test accuracy", title=dataset)
    axes.legend()
    figure.tight_layout()
    figure.savefig(workdir / f"{dataset}.png", dpi=120)
    plt.close(figure)


def _curve(job: Job) -> list[tuple[int, float]]:
    """(training images, test accuracy) points: the evaluation curve if there is one, else the end."""
    evals = job.out / "evals.jsonl"
    points = []
    if evals.exists():
        points = [
            (p["train_images"], p["accuracy"])
            for p in map(json.loads, evals.read_text().splitlines())
            if p["split"] == "test"
        ]
    summary = json.loads((job.out / "summary.json").read_text())
    return points or [(summary["train"]["images"], summary["evaluations"]["test"]["accuracy"])]
