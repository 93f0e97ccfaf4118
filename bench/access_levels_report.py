"""The tables and the plot of bench/access_levels.py, read from the job folders alone (no server): test
accuracy (mean ± std over seeds) per method and access level at each training-image budget, the images
each level needs to reach the logits level's accuracy at the largest budget, and what the server's ledger
charged each job's key beside the job's own meter.

Imported by the script as ``access_levels_report`` (a script's own folder is first on its path).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from query_efficiency_report import VariantRuns, draw_mean_band, images_to_reach, load_runs, mean_std_pct

__all__ = ["LEVELS_ORDER", "render", "write_report"]

LEVELS_ORDER = ("logits", "top-5", "top-1", "label")


def _target(logits: VariantRuns | None, budget: int) -> float | None:
    measured = logits.at("test", budget) if logits else None
    return statistics.mean(measured) if measured else None


def render_task(
    task: str, methods: Sequence[str], budgets: Sequence[int], runs: dict[str, VariantRuns]
) -> list[str]:
    header = " | ".join(["0 (start)", *(f"{b / 1000:g}k" for b in budgets)])
    lines = [f"### {task}", ""]
    served = sorted({variant.served for variant in runs.values()})
    lines += [f"Served: {', '.join(served)}.", ""]
    lines += [
        f"Test accuracy (%), mean ± std over the seeds. 'Images to reach' the same method's logits-level "
        f"test accuracy at {budgets[-1]:,} images (n/a where that is not above its accuracy at 0 images); "
        f"'not run': the runs stopped before that budget.",
        "",
        f"| method | level | seeds | {header} | images to reach logits at {budgets[-1] // 1000}k |",
        "|---|---|---:|" + "---:|" * (1 + len(budgets)) + "---:|",
    ]
    for method in methods:
        target = _target(runs.get(f"{method}-logits"), budgets[-1])
        start = _target(runs.get(f"{method}-logits"), 0)
        if target is not None and start is not None and target <= start:
            target = None  # the logits level lost accuracy: there is nothing to reach ("n/a")
        for level in LEVELS_ORDER:
            variant = runs.get(f"{method}-{level}")
            if variant is None:
                continue
            cells = " | ".join(mean_std_pct(variant.at("test", b)) for b in [0, *budgets])
            reach = images_to_reach(variant, target)
            lines.append(f"| {method} | {level} | {len(variant.summaries)} | {cells} | {reach} |")
    return lines + [""] + _ledger_table(runs)


def _ledger_table(runs: dict[str, VariantRuns]) -> list[str]:
    lines = [
        "What the server's ledger charged each job's key (means over seeds), beside the job's own meter "
        "(training + evaluation images). At level logits training is the loss endpoint; at the others "
        "training and evaluation both go through the logits endpoint.",
        "",
        "| job | loss images (ledger) | logits images (ledger) | cost (ledger) | images (meter) "
        "| wall s/job | ledger = meter |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, variant in runs.items():
        if any(ledger is None for ledger in variant.ledgers):
            lines.append(f"| {name} | no ledger record | | | | | |")
            continue
        ledgers = [ledger for ledger in variant.ledgers if ledger is not None]
        loss = [ledger["by_endpoint"].get("loss", {}).get("images", 0) for ledger in ledgers]
        logits = [ledger["by_endpoint"].get("logits", {}).get("images", 0) for ledger in ledgers]
        costs = [ledger["total"]["cost"] for ledger in ledgers]
        meter = [s.train.images + s.eval.images for s in variant.summaries]
        same = all(a + b == m for a, b, m in zip(loss, logits, meter, strict=True))
        mean = statistics.mean
        wall = mean(s.wall_time for s in variant.summaries)
        lines.append(
            f"| {name} | {mean(loss):,.0f} | {mean(logits):,.0f} | {mean(costs):,.2f} | {mean(meter):,.0f} "
            f"| {wall:,.0f} | {'yes' if same else 'no (a job was resumed)'} |"
        )
    return lines


def render(
    workdir: Path, methods: Sequence[str], budgets: Sequence[int]
) -> tuple[str, dict[str, dict[str, VariantRuns]]]:
    lines: list[str] = []
    everything = {}
    for task in sorted(p.name for p in workdir.iterdir() if p.is_dir() and p.name != "data"):
        names = [f"{method}-{level}" for method in methods for level in LEVELS_ORDER]
        loaded = {name: load_runs(workdir / task, name) for name in names}
        runs = {name: variant for name, variant in loaded.items() if variant is not None}
        if runs:
            lines += render_task(task, methods, budgets, runs) + [""]
            everything[task] = runs
    return "\n".join(lines), everything


def plot(task: str, methods: Sequence[str], runs: dict[str, VariantRuns], path: Path) -> None:
    """Test accuracy against training images, one panel per method, a line per level (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in methods if any(f"{m}-{level}" in runs for level in LEVELS_ORDER)]
    figure, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4.2), squeeze=False)
    for panel, method in zip(axes[0], shown, strict=True):
        for colour, level in enumerate(LEVELS_ORDER):
            if (variant := runs.get(f"{method}-{level}")) is not None:
                draw_mean_band(panel, variant, f"C{colour}", level)
        panel.set(xlabel="training images queried", ylabel="test accuracy", title=f"{task}: {method}")
        panel.legend(fontsize=8, title="access level")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    workdir: Path, methods: Sequence[str], budgets: Sequence[int], preface: str, out: Path
) -> str:
    """``out`` (markdown) and, per task, a plot beside it (``out``'s stem + ``-<task>.png``)."""
    table, everything = render(workdir, methods, budgets)
    if preface:
        table = f"{preface}\n\n{table}"
    out.parent.mkdir(parents=True, exist_ok=True)
    for task, runs in everything.items():
        image = out.with_name(f"{out.stem}-{task}.png")
        plot(task, methods, runs, image)
        table += f"\nPlot ({task}): `{image}`\n"
    out.write_text(table)
    return table
