"""The table and the plots of a grid's finished jobs.

::

    WORKDIR/results.md      per (dataset, method): seeds, test accuracy (%) mean ± std over the seeds,
                            and means of training images, training forwards (perturbed batches, the
                            unit of published query budgets), requests and cost (training and
                            evaluation) and wall time
    WORKDIR/results.csv     the same rows, unrounded
    WORKDIR/<dataset>.png   test accuracy against training images queried, one line per job

Jobs that have not finished are left out; a (dataset, method) with none finished has no row.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from client.training.grid import GridJob, finished_summaries
from client.training.rundir import Summary

__all__ = ["GridRow", "grid_rows", "markdown_table", "plot_accuracy", "write_csv", "write_report"]


@dataclass(frozen=True)
class GridRow:
    dataset: str
    method: str
    seeds: int  # the finished ones
    accuracy_mean: float  # test accuracy, %
    accuracy_std: float  # sample std over the seeds; 0 for one seed
    train_images: float  # from here on: means over the seeds
    forwards: float | None  # training; None if a run predates their counting
    requests: float  # training and evaluation
    cost: float  # training and evaluation
    wall_time: float  # seconds


def grid_rows(summaries: Mapping[GridJob, Summary]) -> list[GridRow]:
    """One row per (dataset, method), in the order the jobs were planned."""
    groups: dict[tuple[str, str], list[Summary]] = {}
    for job, summary in summaries.items():
        groups.setdefault((job.dataset, job.label), []).append(summary)
    return [_row(dataset, method, runs) for (dataset, method), runs in groups.items()]


def _row(dataset: str, method: str, runs: list[Summary]) -> GridRow:
    accuracy = [100 * run.evaluations["test"]["accuracy"] for run in runs]
    mean = statistics.mean
    return GridRow(
        dataset=dataset,
        method=method,
        seeds=len(runs),
        accuracy_mean=mean(accuracy),
        accuracy_std=statistics.stdev(accuracy) if len(runs) > 1 else 0.0,
        train_images=mean(run.train.images for run in runs),
        forwards=_mean_forwards(runs),
        requests=mean(run.train.requests + run.eval.requests for run in runs),
        cost=mean(run.train.cost + run.eval.cost for run in runs),
        wall_time=mean(run.wall_time for run in runs),
    )


def _mean_forwards(runs: list[Summary]) -> float | None:
    counts = [run.train.forwards for run in runs]
    known = [count for count in counts if count is not None]
    return statistics.mean(known) if len(known) == len(counts) else None


def markdown_table(rows: Sequence[GridRow]) -> str:
    lines = [
        "| dataset | method | seeds | test accuracy (%) | training images | forwards | requests | cost "
        "| wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        forwards = "n/a" if row.forwards is None else f"{row.forwards:,.0f}"
        lines.append(
            f"| {row.dataset} | {row.method} | {row.seeds} | {row.accuracy_mean:.1f} ± "
            f"{row.accuracy_std:.1f} | {row.train_images:,.0f} | {forwards} | {row.requests:,.0f} | "
            f"{row.cost:.2f} | {row.wall_time:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[GridRow], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(GridRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def write_report(jobs: Sequence[GridJob], workdir: Path) -> str:
    """Write results.md, results.csv and a plot per dataset from the finished jobs; returns the table."""
    summaries = finished_summaries(jobs)
    rows = grid_rows(summaries)
    write_csv(rows, workdir / "results.csv")
    table = markdown_table(rows)
    (workdir / "results.md").write_text(table)
    for dataset in sorted({job.dataset for job in jobs}):
        finished = {job: summary for job, summary in summaries.items() if job.dataset == dataset}
        if finished:
            plot_accuracy(dataset, finished, workdir / f"{dataset}.png")
    return table


def plot_accuracy(dataset: str, summaries: Mapping[GridJob, Summary], path: Path) -> None:
    """Test accuracy against training images queried: a line per job, a colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({job.label for job in summaries})
    figure, axes = plt.subplots(figsize=(6, 4))
    for colour, method in enumerate(methods):
        jobs = [job for job in summaries if job.label == method]
        for index, job in enumerate(jobs):
            axes.plot(
                *zip(*_curve(job, summaries[job]), strict=True),
                marker="o",
                label=method if index == 0 else None,
                color=f"C{colour}",
            )
    axes.set(xlabel="training images queried", ylabel="test accuracy", title=dataset)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _curve(job: GridJob, summary: Summary) -> list[tuple[int, float]]:
    """(training images, test accuracy) points: the evaluation curve if there is one, else the end."""
    points = [(p["train_images"], p["accuracy"]) for p in job.out.eval_lines() if p["split"] == "test"]
    return points or [(summary.train.images, summary.evaluations["test"]["accuracy"])]
