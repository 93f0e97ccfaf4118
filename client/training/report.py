"""``blackvip report RUN...``: any set of finished runs side by side, read from their folders.

::

    OUT/report.md    run, method, dataset, seed, test accuracy, training images, requests, training cost
                     and cost (training and evaluation), one row per run in the order given
    OUT/report.csv   the same rows, unrounded
    OUT/report.png   test accuracy against training images queried (left) and against training cost (right)

Each run is read through :class:`RunDir`: ``config.json`` (method, dataset, seed, the server's price),
``summary.json`` (the final numbers) and ``evals.jsonl`` (the curve). A run's curve is its test
evaluations during training, ending at its final evaluation; a run with none is its final point alone.
Reading needs neither torch nor the server.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from client._exceptions import BlackVIPError
from client.training.rundir import RunDir, Summary
from shared.protocol import cost_of

__all__ = [
    "CurvePoint",
    "ReportFiles",
    "RunReport",
    "markdown_table",
    "plot_runs",
    "read_run",
    "write_report",
]

SPLIT = "test"


@dataclass(frozen=True)
class CurvePoint:
    train_images: int
    train_cost: float
    accuracy: float  # a fraction


@dataclass(frozen=True)
class RunReport:
    run: str  # the folder as given
    method: str
    dataset: str  # the preset, else the data folder's name
    seed: int
    test_accuracy: float  # the final evaluation's, a fraction
    train_images: int
    requests: int  # training and evaluation
    train_cost: float
    cost: float  # training and evaluation


@dataclass(frozen=True)
class ReportFiles:
    table: Path
    csv: Path
    picture: Path


def read_run(path: Path) -> tuple[RunReport, list[CurvePoint]]:
    """A finished run's row and its test-accuracy curve; a clear error for anything else."""
    run = RunDir(path)
    if not run.config.is_file():
        raise BlackVIPError(f"{path} is not a run folder: it has no {run.config.name}")
    if not run.finished():
        raise BlackVIPError(
            f"{path} has not finished (no {run.summary.name}): finish it with `blackvip train --resume`"
        )
    saved = json.loads(run.config.read_text())
    config, price = saved["config"], float(saved["server"]["price_per_1k_images"])
    summary = run.read_summary()
    if SPLIT not in summary.evaluations:
        raise BlackVIPError(
            f"{path} has no {SPLIT} evaluation (it evaluated {', '.join(summary.evaluations) or 'nothing'})"
        )
    row = RunReport(
        run=str(path),
        method=summary.method,
        dataset=config.get("dataset") or Path(config["data"]).name,
        seed=int(config["seed"]),
        test_accuracy=float(summary.evaluations[SPLIT]["accuracy"]),
        train_images=summary.train.images,
        requests=summary.train.requests + summary.eval.requests,
        train_cost=summary.train.cost,
        cost=summary.train.cost + summary.eval.cost,
    )
    return row, _curve(run, summary, price)


def _curve(run: RunDir, summary: Summary, price: float) -> list[CurvePoint]:
    points = []
    for line in run.eval_lines():
        if line["split"] == SPLIT:
            images = int(line["train_images"])
            points.append(CurvePoint(images, cost_of(images, price), float(line["accuracy"])))
    accuracy = float(summary.evaluations[SPLIT]["accuracy"])
    final = CurvePoint(summary.train.images, summary.train.cost, accuracy)
    # the last evaluation during training may already be the final one (same images, same prompt)
    if not points or points[-1].train_images < final.train_images:
        points.append(final)
    return points


def markdown_table(rows: Sequence[RunReport]) -> str:
    lines = [
        "| run | method | dataset | seed | test accuracy (%) | training images | requests "
        "| training cost | cost |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.run} | {row.method} | {row.dataset} | {row.seed} | {100 * row.test_accuracy:.2f} "
            f"| {row.train_images:,} | {row.requests:,} | {row.train_cost:.4f} | {row.cost:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _write_csv(rows: Sequence[RunReport], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(RunReport)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def plot_runs(runs: Sequence[tuple[RunReport, list[CurvePoint]]], path: Path) -> None:
    """Two panels: test accuracy against training images queried, and against training cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_images, by_cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (row, curve) in enumerate(runs):
        label = f"{row.run} ({row.method})"
        style: dict[str, Any] = {"marker": "o", "color": f"C{index % 10}", "label": label}
        accuracy = [point.accuracy for point in curve]
        by_images.plot([point.train_images for point in curve], accuracy, **style)
        by_cost.plot([point.train_cost for point in curve], accuracy, **style)
    by_images.set(xlabel="training images queried", ylabel="test accuracy")
    by_cost.set(xlabel="training cost (server's price x training images)", ylabel="test accuracy")
    by_images.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(paths: Sequence[Path], out: Path) -> tuple[str, ReportFiles]:
    """Read every run (all of them, before writing anything), then write the table, the CSV and the plot."""
    runs = [read_run(path) for path in paths]
    rows = [row for row, _ in runs]
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "report.md", out / "report.csv", out / "report.png")
    table = markdown_table(rows)
    files.table.write_text(table)
    _write_csv(rows, files.csv)
    plot_runs(runs, files.picture)
    return table, files
