"""CoOp's few-shot protocol: K images per class from train and min(K, 4) per class from val, the test
split untouched. A class with fewer images keeps all of them (no repeats). The draw depends only on the
splits, K and the seed; with a cache folder it is written once to ``shot_{K}-seed_{S}.json`` and that
file is what later calls use (as CoOp reuses its ``split_fewshot/shot_{K}-seed_{S}.pkl``), so a run
keeps the images it started with even if the sampling code changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from client._exceptions import DatasetError
from client.datasets.base import DatasetSplits, Item, read_json_file

__all__ = ["VAL_SHOTS_MAX", "cache_path", "sample_few_shot", "sample_per_class"]

VAL_SHOTS_MAX = 4


def cache_path(cache_dir: Path, shots: int, seed: int) -> Path:
    return Path(cache_dir) / f"shot_{shots}-seed_{seed}.json"


def sample_few_shot(splits: DatasetSplits, shots: int, seed: int, cache_dir: Path | None) -> DatasetSplits:
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    path = cache_path(cache_dir, shots, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        train, val = _read_cache(path, len(splits.class_names))
        return DatasetSplits(train, val, splits.test, splits.class_names)
    rng = np.random.default_rng(seed)
    train = sample_per_class(splits.train, shots, rng)
    val = sample_per_class(splits.val, min(shots, VAL_SHOTS_MAX), rng)
    if path is not None:
        from client.checkpoint import atomic_write_json  # imported here: it brings in torch

        atomic_write_json(path, {"shots": shots, "seed": seed, "train": _dump(train), "val": _dump(val)})
    return DatasetSplits(train, val, splits.test, splits.class_names)


def sample_per_class(items: list[Item], shots: int, rng: np.random.Generator) -> list[Item]:
    """``shots`` items of each label (all of a label that has fewer), classes in label order, each
    class's items in their original order."""
    by_label: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_label.setdefault(item.label, []).append(index)
    chosen: list[Item] = []
    for label in sorted(by_label):
        members = by_label[label]
        picked = members if len(members) <= shots else sorted(rng.choice(members, shots, replace=False))
        chosen.extend(items[int(i)] for i in picked)
    return chosen


def _dump(items: list[Item]) -> list[list[Any]]:
    return [[str(item.path), item.label] for item in items]


def _read_cache(path: Path, num_classes: int) -> tuple[list[Item], list[Item]]:
    data = read_json_file(path)
    lists = []
    for split in ("train", "val"):
        try:
            items = [Item(Path(str(p)), int(label)) for p, label in data[split]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"few-shot cache {path} is malformed (expected train/val lists of [path, label]); delete it"
            ) from exc
        if any(not 0 <= item.label < num_classes for item in items):
            raise DatasetError(f"few-shot cache {path} has labels outside 0..{num_classes - 1}; delete it")
        lists.append(items)
    return lists[0], lists[1]
