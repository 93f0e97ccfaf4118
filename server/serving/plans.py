"""Forward sizes: how a batch of rows is split into forwards of the fixed sizes (``forward_plan``, or
the cheapest by measured time, ``cheapest_plans``), and the check that those sizes give every row the
same bits (``same_rows_at``), which makes any plan's answers independent of the batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["cheapest_plans", "forward_plan", "same_rows_at"]


def forward_plan(rows: int, shapes: tuple[int, ...]) -> list[int]:
    """Forward sizes for ``rows`` rows: the largest shape while it is filled, then the smallest
    shape that holds the rest."""
    largest, plan = shapes[-1], []
    while rows > largest:
        plan.append(largest)
        rows -= largest
    plan.append(next(size for size in shapes if size >= rows))
    return plan


def cheapest_plans(
    max_rows: int, shapes: tuple[int, ...], seconds: Mapping[int, float]
) -> dict[int, list[int]]:
    """For each row count 1..``max_rows``, the forward sizes whose measured times sum least (ties:
    fewer forwards, then the larger first), padding only in the last. With per-forward overhead, 20
    rows as 16 + 4 beat one 64-row forward; every plan gives a row the same bits, since the shapes
    were checked (``same_rows_at``)."""
    cost: list[tuple[float, int]] = [(0.0, 0)]  # (seconds, forwards) of the best plan for r rows
    first: list[int] = [0]  # that plan's first forward size
    for rows in range(1, max_rows + 1):
        options = [
            ((seconds[s] + cost[max(0, rows - s)][0], 1 + cost[max(0, rows - s)][1]), s) for s in shapes
        ]
        best, size = min(options, key=lambda option: (*option[0], -option[1]))  # ties: larger first
        cost.append(best)
        first.append(size)
    plans: dict[int, list[int]] = {}
    for rows in range(1, max_rows + 1):
        plan, left = [], rows
        while left > 0:
            plan.append(first[left])
            left -= first[left]
        plans[rows] = plan
    return plans


def same_rows_at(forward: Callable[[torch.Tensor], torch.Tensor], image_shape: tuple[int, ...],
                 shapes: tuple[int, ...], seconds: dict[int, float] | None = None) -> bool:  # fmt: skip
    """Whether forwards of every size in ``shapes`` give the same rows the same bits, at the start
    and one row further on, on random images. Kernels are chosen by shape, not by values, so random
    rows show it; equal bits by chance across different reduction orders would be a coincidence.
    ``seconds`` receives each size's time (its second forward: warmed up)."""
    rng = torch.Generator().manual_seed(0)
    images = torch.rand((max(shapes) + 1, *image_shape), generator=rng)
    smallest = min(shapes)
    reference = forward(images[:smallest].clone())
    for size in shapes:
        if not torch.equal(forward(images[:size].clone())[:smallest], reference):
            return False
        started = time.perf_counter()
        shifted = forward(images[1 : size + 1].clone())
        if seconds is not None:
            seconds[size] = time.perf_counter() - started
        if not torch.equal(shifted[: smallest - 1], reference[1:]):
            return False
    return True
