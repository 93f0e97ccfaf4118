"""``blackvip demo``: zero-shot, then BlackVIP, on an offline Loc task (by default on real MNIST digits)
through a real server.

Starts ``blackvip-server`` on the small CLIP made here (unless ``--url`` names one), writes the task's
image folders, runs the jobs, prints a table and plots test accuracy against training images queried.
With ``--compare`` BlackVIP also runs with each named optimiser of ``COMPARED`` beside the seed's SPSA-GC,
on as many training images and evaluated at the same training images.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from client._exceptions import BlackVIPError
from client.local_server import local_server
from client.training.config import TrainConfig, build_config
from client.training.loop import JobResult, run_job
from client.training.plan import images_per_step
from digits import TASK_NAMES
from digits.tasks import write_task_folder

__all__ = ["COMPARED", "demo_configs", "equal_image_length", "render_table", "run_demo"]

log = logging.getLogger(__name__)

# the named optimisers --compare runs (bench/results/query_efficiency.md, query_efficiency_es.md)
COMPARED = ("spsa-gc-q1", "cma-es-d500")


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


def demo_configs(args: argparse.Namespace, url: str, data: Path, run_root: Path) -> dict[str, TrainConfig]:
    """The jobs by their label: zero-shot, BlackVIP with the seed's SPSA-GC for ``--steps``, and with
    ``--compare`` BlackVIP with each of ``COMPARED`` for as many training images (its steps and evaluation
    interval scaled by the images a step of each takes)."""
    jobs = {"zeroshot": {"method": "zeroshot"}, "blackvip": {"method": "blackvip"}}
    for name in COMPARED if args.compare else ():
        jobs[f"blackvip-{name}"] = {"method": "blackvip", "optimizer": name}
    common = {"url": url, "api_key": args.api_key, "dataset": args.task, "data": data, "seed": args.seed}
    length = {"steps": args.steps, "eval_every": args.eval_every}
    configs = {
        label: build_config({**common, **settings, **length, "out": run_root / label})
        for label, settings in jobs.items()
    }
    for name in COMPARED if args.compare else ():
        compared = configs[f"blackvip-{name}"]
        configs[f"blackvip-{name}"] = compared.model_copy(
            update=equal_image_length(configs["blackvip"], compared)
        )
    return configs


def equal_image_length(reference: TrainConfig, other: TrainConfig) -> dict[str, int]:
    """``other``'s steps and evaluation interval for the training images of ``reference``'s."""
    per_step, other_per_step = images_per_step(reference), images_per_step(other)
    images = (reference.steps or 0) * per_step
    every = reference.eval_every * per_step
    if images % other_per_step or every % other_per_step:
        raise BlackVIPError(
            f"{other.optimizer} takes {other_per_step} training images a step: it cannot stop or evaluate at "
            f"the seed's {images:,} and every {every:,}; choose --steps and --eval-every to fit"
        )
    return {"steps": images // other_per_step, "eval_every": every // other_per_step}


def _jobs(args: argparse.Namespace, url: str, data: Path, run_root: Path) -> dict[str, JobResult]:
    results = {}
    for label, config in demo_configs(args, url, data, run_root).items():
        log.info("running %s", label)
        results[label] = run_job(config)
    return results


def render_table(results: dict[str, JobResult]) -> str:
    rows = [
        "| method | test accuracy | training images queried | forwards | requests | cost | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, result in results.items():
        summary = result.summary
        train, evaluation = summary.train, summary.eval
        rows.append(
            f"| {method} | {summary.evaluations['test']['accuracy']:.4f} | {train.images:,} | "
            f"{train.forwards or 0:,} | {train.requests + evaluation.requests:,} | "
            f"{train.cost + evaluation.cost:.2f} | {summary.wall_time:.1f} |"
        )
    return "\n".join(rows) + "\n"


def _plot(results: dict[str, JobResult], path: Path, task: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    zero = results["zeroshot"].summary.evaluations["test"]["accuracy"]
    for label, result in results.items():
        if label == "zeroshot":
            continue
        curve = [p for p in result.run.eval_lines() if p["split"] == "test"]
        optimizer = "SPSA-GC" if label == "blackvip" else label.removeprefix("blackvip-")
        images, accuracy = [p["train_images"] for p in curve], [p["accuracy"] for p in curve]
        axes.plot(images, accuracy, marker="o", label=f"BlackVIP ({optimizer})")
    axes.axhline(zero, color="grey", linestyle="--", label=f"zero-shot ({zero:.3f})")
    axes.set(xlabel="training images queried", ylabel="test accuracy", title=f"{task} through the API")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
