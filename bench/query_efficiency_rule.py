"""The rule a setting must pass to become a named optimiser (issue 30), read from the study's runs across
tasks: chosen on val (the mean over tasks of each task's mean val accuracy at ``SELECT_AT`` training
images), then judged on test at the same budget against the seed's SPSA-GC on every task: ahead on the mean
over seeds, and ahead on at least ``AHEAD_SHARE`` of the seeds, paired by seed (the same few-shot draw).

Imported by bench/query_efficiency.py beside ``query_efficiency_report``.
"""

from __future__ import annotations

import math
import statistics

from query_efficiency_report import SELECT_AT, VariantRuns

__all__ = ["AHEAD_SHARE", "by_seed", "render_rule"]

AHEAD_SHARE = 0.8  # 4 of 5 seeds


def by_seed(variant: VariantRuns, split: str, images: int) -> dict[int, float]:
    """Accuracy at exactly ``images`` training images by the job's seed (a seed without that point: left
    out)."""
    points = {}
    for config, curve in zip(variant.configs, variant.curves, strict=True):
        if (value := curve.get((split, images))) is not None:
            points[int(config["seed"])] = value
    return points


def _verdict(variant: VariantRuns, seed: VariantRuns) -> tuple[str, bool]:
    """'mean vs seed's mean, ahead on k of n' on test at SELECT_AT, and whether that passes the rule."""
    mine, theirs = by_seed(variant, "test", SELECT_AT), by_seed(seed, "test", SELECT_AT)
    paired = sorted(set(mine) & set(theirs))
    if not paired:
        return "not run", False
    ahead = sum(mine[s] > theirs[s] for s in paired)
    mean, reference = statistics.mean(mine[s] for s in paired), statistics.mean(theirs[s] for s in paired)
    passes = mean > reference and ahead >= math.ceil(AHEAD_SHARE * len(paired))
    return f"{100 * mean:.1f} vs {100 * reference:.1f}, ahead on {ahead} of {len(paired)}", passes


def render_rule(everything: dict[str, dict[str, VariantRuns]]) -> str:
    """A table over tasks for the variants run with the seed's number of seeds on every task, best on val
    first, and a line naming the best on val and whether it passes; '' with fewer than two tasks."""
    tasks = sorted(everything)
    if len(tasks) < 2 or any("seed" not in everything[task] for task in tasks):
        return ""
    seeds = {task: len(everything[task]["seed"].summaries) for task in tasks}
    names = set.intersection(*(set(everything[task]) for task in tasks)) - {"seed", "zeroshot"}
    scored = []
    for name in names:
        if any(len(everything[task][name].summaries) < seeds[task] for task in tasks):
            continue  # a screening run: fewer seeds than the seed's
        val = [by_seed(everything[task][name], "val", SELECT_AT) for task in tasks]
        if all(val):
            scored.append((statistics.mean(statistics.mean(v.values()) for v in val), name))
    if not scored:
        return ""
    header = " | ".join(f"{task}: test at {SELECT_AT // 1000}k vs the seed" for task in tasks)
    lines = [
        f"### Across tasks: the setting chosen on val, and the rule for naming it (at {SELECT_AT:,} images)",
        "",
        "Val: the mean over tasks of each task's mean val accuracy (%). Test: mean over the seeds (%) "
        "against the seed's SPSA-GC on the same seeds, and on how many seeds it is ahead. The rule: ahead "
        f"on the mean and on at least {AHEAD_SHARE:.0%} of the seeds, on every task.",
        "",
        f"| variant | val, mean over tasks | {header} | passes |",
        "|---|---:|" + "---|" * len(tasks) + "---|",
    ]
    verdicts = {}
    for val, name in sorted(scored, reverse=True):
        results = [_verdict(everything[task][name], everything[task]["seed"]) for task in tasks]
        verdicts[name] = all(passes for _, passes in results)
        cells = " | ".join(text for text, _ in results)
        lines.append(f"| {name} | {100 * val:.1f} | {cells} | {'yes' if verdicts[name] else 'no'} |")
    best = max(scored)[1]
    outcome = "passes the rule" if verdicts[best] else "does not pass the rule"
    return "\n".join([*lines, "", f"Best on val across tasks: **{best}**; it {outcome}.", ""])
