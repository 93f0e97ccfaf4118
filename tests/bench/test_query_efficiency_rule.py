"""bench/query_efficiency_rule.py: the setting is chosen on val across tasks, and passes only if it is ahead
of the seed's SPSA-GC on test on every task, on the mean and on 4 of 5 seeds paired by seed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from client.training.rundir import Spend, Summary

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # the scripts' own import path
from query_efficiency_report import SELECT_AT, VariantRuns  # noqa: E402
from query_efficiency_rule import by_seed, render_rule  # noqa: E402

SPEND = Spend(requests=1, images=SELECT_AT, bytes=0, cost=0.0)


def runs(name: str, test: list[float], val: list[float], seeds: list[int] | None = None) -> VariantRuns:
    seeds = seeds or list(range(1, len(test) + 1))
    summary = Summary("blackvip", 125, "budget", None, None, SPEND, SPEND, 1.0)
    curves = [{("test", SELECT_AT): t, ("val", SELECT_AT): v} for t, v in zip(test, val, strict=True)]
    return VariantRuns(name, [summary] * len(test), [{"seed": s} for s in seeds], curves, [None] * len(test))


SEED = runs("seed", [0.20, 0.30, 0.25, 0.20, 0.25], [0.2] * 5)


def row(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| {name} |"))


def test_ahead_on_the_mean_and_on_four_of_five_seeds_on_every_task_passes() -> None:
    four = runs("four", [0.30, 0.29, 0.30, 0.30, 0.30], [0.3] * 5)  # behind on seed 2 only
    table = render_rule({"a": {"seed": SEED, "four": four}, "b": {"seed": SEED, "four": four}})
    assert "| four | 30.0 | 29.8 vs 24.0, ahead on 4 of 5 | 29.8 vs 24.0, ahead on 4 of 5 | yes |" in table
    assert "Best on val across tasks: **four**; it passes the rule." in table


def test_three_of_five_on_one_task_or_a_lower_mean_fails() -> None:
    three = runs("three", [0.30, 0.29, 0.24, 0.30, 0.30], [0.3] * 5)  # behind on seeds 2 and 3
    low_mean = runs("low", [0.21, 0.31, 0.26, 0.21, 0.01], [0.25] * 5)  # ahead on 4 of 5, mean below
    good = runs("good", [0.30] * 5, [0.3] * 5)
    table = render_rule(
        {"a": {"seed": SEED, "x": three, "y": low_mean}, "b": {"seed": SEED, "x": good, "y": good}}
    )
    assert row(table, "x").endswith("| no |") and "ahead on 3 of 5" in row(table, "x")
    assert row(table, "y").endswith("| no |") and "20.0 vs 24.0, ahead on 4 of 5" in row(table, "y")


def test_the_choice_is_the_best_val_mean_over_tasks_and_screening_runs_are_left_out() -> None:
    steady = runs("steady", [0.3] * 5, [0.30] * 5)  # 30 on both tasks
    spiky = runs("spiky", [0.3] * 5, [0.40] * 5)  # 40 on one task, 10 on the other: 25 over tasks
    dull = runs("spiky", [0.3] * 5, [0.10] * 5)
    screening = runs("screen", [0.9] * 3, [0.9] * 3)  # 3 seeds of the seed's 5
    tasks = {
        "a": {"seed": SEED, "steady": steady, "spiky": spiky, "screen": screening},
        "b": {"seed": SEED, "steady": steady, "spiky": dull, "screen": screening},
    }
    table = render_rule(tasks)
    assert "Best on val across tasks: **steady**" in table
    assert table.index("| steady |") < table.index("| spiky |") and "| screen |" not in table


def test_seeds_are_paired_by_number_not_position() -> None:
    shuffled = runs("shuffled", [0.26, 0.31, 0.21, 0.26, 0.21], [0.3] * 5, seeds=[5, 2, 4, 3, 1])
    assert by_seed(shuffled, "test", SELECT_AT) == {5: 0.26, 2: 0.31, 4: 0.21, 3: 0.26, 1: 0.21}
    table = render_rule({"a": {"seed": SEED, "s": shuffled}, "b": {"seed": SEED, "s": shuffled}})
    assert "ahead on 5 of 5" in row(table, "s")  # by position it would be ahead on 2 of 5


@pytest.mark.parametrize("tasks", [{"a": {"seed": SEED}}, {"a": {"x": SEED}, "b": {"x": SEED}}])
def test_nothing_to_judge_renders_nothing(tasks: dict) -> None:
    assert render_rule(tasks) == ""
