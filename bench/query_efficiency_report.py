"""The tables and the plot of bench/query_efficiency.py, read from the job folders alone (no server):
test and val accuracy (mean ± std over seeds) at each training-image budget, the images each variant
needs to reach the seed's accuracy at 640k images, what the server's ledger charged each variant, and
test accuracy against training images for the seed and the variants that lead on val.

Imported by the script as ``query_efficiency_report`` (a script's own folder is first on its path).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from client.training.config import ES_OPTIMIZERS, HYBRID, TrainConfig
from client.training.plan import evaluations_per_step, phases
from client.training.rundir import RunDir, Summary

__all__ = [
    "ReportInputs",
    "VariantRuns",
    "images_to_reach",
    "load_runs",
    "mean_std_pct",
    "render",
    "write_report",
]

SELECT_AT = 160_000  # the budget the best variant is chosen at (on val): the target budget
TARGET_AT = 640_000  # the seed's accuracy there is what the others must reach
LEADERS = 3  # variants drawn beside the seed


@dataclass(frozen=True)
class ReportInputs:
    workdir: Path
    variants: list[str]  # in the report's order
    notes: dict[str, str]
    budgets: Sequence[int]
    preface: str = ""  # a paragraph above the tables (e.g. which weights the server held, if not the shipped)


@dataclass(frozen=True)
class VariantRuns:
    """A variant's finished runs on one task: summaries, settings and evaluation curves per seed."""

    name: str
    summaries: list[Summary]
    configs: list[dict[str, Any]]
    curves: list[dict[tuple[str, int], float]]  # (split, training images) -> accuracy
    ledgers: list[dict[str, Any] | None]
    served: str = ""  # the server's model and weights, as its info endpoint named them

    def at(self, split: str, images: int) -> list[float] | None:
        """Accuracy of every seed at exactly ``images`` training images, None if a seed has no such point."""
        points = [curve.get((split, images)) for curve in self.curves]
        return None if not points or any(p is None for p in points) else [p for p in points if p is not None]

    def common_points(self, split: str) -> list[int]:
        shared = set.intersection(*({images for s, images in curve if s == split} for curve in self.curves))
        return sorted(shared)


Section: TypeAlias = "Callable[[dict[str, dict[str, VariantRuns]]], str]"  # every task's runs -> markdown


def load_runs(task_dir: Path, name: str) -> VariantRuns | None:
    runs = [RunDir(path) for path in sorted((task_dir / name).glob("seed*")) if RunDir(path).finished()]
    if not runs:
        return None
    curves = []
    for run in runs:
        curve = {(p["split"], p["train_images"]): p["accuracy"] for p in run.eval_lines()}
        summary = run.read_summary()
        for split, result in summary.evaluations.items():  # the final evaluation is the run's last point
            curve.setdefault((split, summary.train.images), result["accuracy"])
        curves.append(curve)
    ledgers = [
        json.loads(p.read_text()) if (p := run.path / "ledger.json").exists() else None for run in runs
    ]
    saved = [json.loads(run.config.read_text()) for run in runs]
    configs = [entry["config"] for entry in saved]
    served = "{model} ({pretrained})".format(**saved[0]["server"])
    return VariantRuns(name, [run.read_summary() for run in runs], configs, curves, ledgers, served)


def mean_std_pct(values: list[float] | None) -> str:
    if values is None:
        return "not run"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def _target(seed: VariantRuns | None) -> tuple[float | None, str]:
    measured = seed.at("test", TARGET_AT) if seed else None
    if measured is not None:
        return statistics.mean(measured), f"the seed's {TARGET_AT:,}-image test accuracy measured here"
    return None, "no seed run to 640k images"


def images_to_reach(runs: VariantRuns, target: float | None) -> str:
    if target is None:
        return "n/a"
    points = runs.common_points("test")
    for images in points:
        accuracy = runs.at("test", images)
        if accuracy is not None and statistics.mean(accuracy) >= target:
            return f"{images:,}"
    return f"not by {points[-1]:,}" if points else "n/a"


def _es_settings(config: dict[str, Any]) -> str:
    """An evolution strategy's settings: sigma0 = r0 / sqrt(dimension searched), known here for cma-es."""
    parts = [config["optimizer"], f"lambda {config['es_popsize']}", f"batch {config['batch_size']}"]
    r0 = config["es_r0"]
    if config["optimizer"] == "sep-cma-es":
        parts.append(f"every value, r0 {r0:g}")
    else:
        parts.append(f"d {config['es_dim']}, sigma0 {r0 / config['es_dim'] ** 0.5:.3g} (r0 {r0:g})")
    if config["optimizer"] == HYBRID:
        parts.append(f"{config['es_steps']} steps, then SPSA-GC q {config['q']}, a {config['a']:g}")
    return ", ".join(parts)


def _forwards(config: TrainConfig) -> str:
    """Forwards per step; a hybrid's in each phase."""
    counts = [str(forwards) for _, forwards in phases(config, config.es_steps + 1)]
    return " then ".join(counts) if config.strategy == HYBRID else str(evaluations_per_step(config))


def _settings(config: dict[str, Any]) -> str:
    if config["method"] == "zeroshot":
        return "-"
    if config.get("optimizer") in ES_OPTIMIZERS:
        return _es_settings(config)
    parts = [f"q {config['q']}", f"batch {config['batch_size']}", f"a {config['a']:g}", config["optimizer"]]
    if config.get("clip", "none") != "none":
        parts.append(
            f"clip {config['clip']}" + (f" {config['clip_threshold']:g}" if config["clip"] == "fixed" else "")
        )
    if config.get("subspace_dim"):
        rank = f" rank {config['subspace_rank']}" if config.get("subspace_rank") else ""
        parts.append(f"subspace {config['subspace_dim']}{rank}")
    return ", ".join(parts)


def render_task(task: str, inputs: ReportInputs, runs: dict[str, VariantRuns]) -> tuple[list[str], list[str]]:
    """The task's section and its leaders on val at SELECT_AT (best first, the seed excluded)."""
    target, source = _target(runs.get("seed"))
    budgets = list(inputs.budgets)
    header = " | ".join(f"{b / 1000:g}k" for b in budgets)
    target_text = "n/a" if target is None else f"{100 * target:.1f}%"
    lines = [
        f"### {task}",
        "",
        f"Served: {', '.join(sorted({v.served for v in runs.values()}))}.",
        "",
        f"Test accuracy (%), mean ± std over the seeds; target {target_text} ({source}). "
        f"'not run': the runs stopped before that budget.",
        "",
        f"| variant | seeds | settings | forwards/step | {header} | images to reach the target |",
        "|---|---:|---|---:|" + "---:|" * len(budgets) + "---:|",
    ]
    for name, variant in runs.items():
        config = variant.configs[0]
        validated = TrainConfig.model_validate(config)
        per_step = evaluations_per_step(validated)
        cells = " | ".join(mean_std_pct(variant.at("test", 0 if not per_step else b)) for b in budgets)
        lines.append(
            f"| {name} | {len(variant.summaries)} | {_settings(config)} | {_forwards(validated)} | {cells} | "
            f"{images_to_reach(variant, target) if per_step else '-'} |"
        )
    lines += ["", "Val accuracy (%), the split variants are chosen on:", ""]
    lines += [f"| variant | {header} |", "|---|" + "---:|" * len(budgets)]
    scored = []
    full = max(len(variant.summaries) for variant in runs.values())  # fewer seeds: a screening run
    for name, variant in runs.items():
        trained = variant.configs[0]["method"] != "zeroshot"
        cells = " | ".join(mean_std_pct(variant.at("val", b if trained else 0)) for b in budgets)
        lines.append(f"| {name} | {cells} |")
        at_select = variant.at("val", SELECT_AT)
        if name not in ("seed", "zeroshot") and at_select is not None and len(variant.summaries) == full:
            scored.append((statistics.mean(at_select), name))
    leaders = [name for _, name in sorted(scored, reverse=True)]
    if leaders:
        lines += [
            "",
            f"Best on val at {SELECT_AT:,} images, of the variants run with {full} seeds: **{leaders[0]}** "
            f"({_settings(runs[leaders[0]].configs[0])}).",
        ]
    return lines + [""] + _ledger_table(runs), leaders


def _ledger_table(runs: dict[str, VariantRuns]) -> list[str]:
    lines = [
        "What the server's ledger charged each job's key (means over seeds): training = the loss endpoint, "
        "evaluation = logits; 'meter' is the job's own count of its training images.",
        "",
        "| variant | training images (ledger) | training requests (ledger) | evaluation images (ledger) "
        "| training images (meter) | forwards | ledger = meter |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, variant in runs.items():
        if any(ledger is None for ledger in variant.ledgers):
            lines.append(f"| {name} | no ledger record | | | | | |")
            continue
        ledgers = [ledger for ledger in variant.ledgers if ledger is not None]
        loss = [ledger["by_endpoint"].get("loss", {}) for ledger in ledgers]
        logits = [ledger["by_endpoint"].get("logits", {}) for ledger in ledgers]
        meter = [summary.train.images for summary in variant.summaries]
        forwards = [summary.train.forwards or 0 for summary in variant.summaries]
        same = all(entry.get("images", 0) == m for entry, m in zip(loss, meter, strict=True))
        mean = statistics.mean
        lines.append(
            f"| {name} | {mean(e.get('images', 0) for e in loss):,.0f} | "
            f"{mean(e.get('requests', 0) for e in loss):,.0f} | "
            f"{mean(e.get('images', 0) for e in logits):,.0f} | "
            f"{mean(meter):,.0f} | {mean(forwards):,.0f} | {'yes' if same else 'no (a job was resumed)'} |"
        )
    return lines


def render(inputs: ReportInputs) -> tuple[str, dict[str, dict[str, VariantRuns]], dict[str, list[str]]]:
    tasks = sorted(p.name for p in inputs.workdir.iterdir() if p.is_dir() and p.name != "data")
    lines: list[str] = []
    everything, leaders = {}, {}
    for task in tasks:
        loaded = {name: load_runs(inputs.workdir / task, name) for name in inputs.variants}
        found = [(name, variant) for name, variant in loaded.items() if variant is not None]
        # the seed and zero-shot first, then the variants with every seed, then the screening runs
        most = max((len(variant.summaries) for _, variant in found), default=0)
        order = {name: (name not in ("seed", "zeroshot"), len(v.summaries) < most) for name, v in found}
        runs = dict(sorted(found, key=lambda item: order[item[0]]))
        if not runs:
            continue
        section, leaders[task] = render_task(task, inputs, runs)
        lines += section + [""]
        everything[task] = runs
    return "\n".join(lines), everything, leaders


def draw_mean_band(axes: Any, variant: VariantRuns, colour: str, label: str) -> None:
    """``variant``'s test accuracy against training images on ``axes``: the mean over its seeds as a line,
    mean ± std as a band around it."""
    points = variant.common_points("test")
    values = [variant.at("test", p) or [0.0] for p in points]
    means = [statistics.mean(v) for v in values]
    spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    axes.plot(points, means, marker="o", markersize=3, color=colour, label=label)
    low = [m - s for m, s in zip(means, spread, strict=True)]
    high = [m + s for m, s in zip(means, spread, strict=True)]
    axes.fill_between(points, low, high, color=colour, alpha=0.15)


def plot(task: str, runs: dict[str, VariantRuns], leaders: list[str], path: Path) -> None:
    """Test accuracy against training images: the seed and the leaders on val, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for colour, name in enumerate(n for n in ["seed", *leaders[:LEADERS]] if n in runs):
        draw_mean_band(axes, runs[name], f"C{colour}", name)
    if "zeroshot" in runs and (zero := runs["zeroshot"].at("test", 0)):
        axes.axhline(statistics.mean(zero), color="grey", linestyle="--", label="zero-shot")
    target, _ = _target(runs.get("seed"))
    if target is not None:
        axes.axhline(target, color="black", linestyle=":", label=f"seed at {TARGET_AT // 1000}k")
        axes.axvline(SELECT_AT, color="black", linestyle=":", alpha=0.4)
    axes.set(
        xlabel="training images queried", ylabel="test accuracy", title=f"{task}: accuracy against images"
    )
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(inputs: ReportInputs, out: Path, sections: Sequence[Section] = ()) -> str:
    """``out`` (markdown) and, per task, a plot beside it (``out``'s stem + ``-<task>.png``); ``sections``
    render more from every task's runs, after the tasks' tables."""
    table, everything, leaders = render(inputs)
    table += "".join(f"{text}\n" for section in sections if (text := section(everything)))
    if inputs.preface:
        table = f"{inputs.preface}\n\n{table}"
    out.parent.mkdir(parents=True, exist_ok=True)
    for task, runs in everything.items():
        image = out.with_name(f"{out.stem}-{task}.png")
        plot(task, runs, leaders[task], image)
        table += f"\nPlot ({task}): `{image}`\n"
    out.write_text(table)
    return table
