"""Few-shot draws, two rules, each kept because published figures depend on it:

- :func:`few_shot_indices` for image folders (this project's digit tasks, the demo): numpy's generator
  seeded with the run's seed, ``shots`` indices per class, sorted.
- :func:`sample_few_shot` for the benchmark datasets, the seed's rule, below.

CoOp's few-shot protocol: K images per class from train and min(K, 4) per class from val, the test
split untouched. A class with fewer images keeps all of them (no repeats).

The draw is the seed's (my_dassl ``DatasetBase.generate_fewshot_dataset`` after ``set_random_seed``):
Python's ``random`` seeded with the run's seed, classes in order of first appearance in the split,
``random.sample(items, K)`` per class, train first and then val from the same stream. The same seed
therefore picks the same images as the seed/CoOp. With a cache folder the draw is written once to
``shot_{K}-seed_{S}.json`` and later calls reuse it (as CoOp reuses ``split_fewshot/*.pkl``); a cache
made by another sampling rule is refused rather than silently reused.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from client._exceptions import DatasetError
from client.data.atomic import atomic_write_json
from client.data.datasets.base import DatasetSplits, Item, read_json_file

__all__ = ["VAL_SHOTS_MAX", "cache_path", "few_shot_indices", "sample_few_shot", "sample_per_class"]

VAL_SHOTS_MAX = 4
SAMPLER = "python-random-v1"  # the seed's rule; written into every cache file


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> np.ndarray:
    """``shots`` indices per class (all of a class that has fewer), the same for the same seed."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    chosen = []
    for label in np.unique(labels_np):
        members = np.flatnonzero(labels_np == label)
        take = min(shots, len(members))
        chosen.append(np.sort(rng.choice(members, size=take, replace=False)))
    return np.concatenate(chosen)


def cache_path(cache_dir: Path, shots: int, seed: int) -> Path:
    return Path(cache_dir) / f"shot_{shots}-seed_{seed}.json"


def sample_few_shot(splits: DatasetSplits, shots: int, seed: int, cache_dir: Path | None) -> DatasetSplits:
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    path = cache_path(cache_dir, shots, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        train, val = _read_cache(path, len(splits.class_names))
        return DatasetSplits(train, val, splits.test, splits.class_names)
    rng = random.Random(seed)  # the seed's random.seed(cfg.SEED), one stream for train then val
    train = sample_per_class(splits.train, shots, rng)
    val = sample_per_class(splits.val, min(shots, VAL_SHOTS_MAX), rng)
    if path is not None:
        payload = {"shots": shots, "seed": seed, "sampler": SAMPLER, "train": _dump(train), "val": _dump(val)}
        atomic_write_json(path, payload)
    return DatasetSplits(train, val, splits.test, splits.class_names)


def sample_per_class(items: list[Item], shots: int, rng: random.Random) -> list[Item]:
    """The seed's rule: classes in order of first appearance, ``rng.sample(members, shots)`` for a
    class with at least ``shots`` items (in the order drawn), all items of a smaller class."""
    by_label: dict[int, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    chosen: list[Item] = []
    for members in by_label.values():
        chosen.extend(rng.sample(members, shots) if len(members) >= shots else members)
    return chosen


def _dump(items: list[Item]) -> list[list[Any]]:
    return [[str(item.path), item.label] for item in items]


def _read_cache(path: Path, num_classes: int) -> tuple[list[Item], list[Item]]:
    data = read_json_file(path)
    if not isinstance(data, dict) or data.get("sampler") != SAMPLER:
        found = data.get("sampler", "an older rule") if isinstance(data, dict) else "unknown"
        raise DatasetError(
            f"few-shot cache {path} was drawn by {found}, not the seed's rule ({SAMPLER}); "
            "delete it to draw the seed's images (a run started from it keeps its own copy in mind)"
        )
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
