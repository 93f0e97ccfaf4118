"""Few-shot draws, all by the seed's rule (my_dassl ``DatasetBase.generate_fewshot_dataset`` after
``set_random_seed``), so the same seed picks the same images as the seed's code:

Python's ``random`` seeded with the run's seed, classes in order of first appearance in the split,
``random.sample(members, K)`` per class (a class with fewer keeps all of them, no repeats), train first
and then val (min(K, 4) per class) from the same stream, the test split untouched (CoOp's protocol).

- :func:`sample_few_shot` for the benchmark datasets. Where the seed's loader takes numbers from the
  stream before drawing (SVHN shuffles 20 folder listings) the loader records the shuffles
  (``DatasetSplits.shuffles_before_draw``) and they are replayed first; where it lists files in another
  order (ImageNet: ``os.listdir``), the loader lists them that way. With a cache folder the draw is
  written once to ``shot_{K}-seed_{S}.json`` and later calls reuse it (as CoOp reuses
  ``split_fewshot/*.pkl``); a cache made by another rule is refused rather than silently reused.
- :func:`few_shot_indices` for image folders (``blackvip data`` output, the digit tasks, the demo): the
  same rule on the train split, files in name order within each class. The seed's image-folder tasks
  (Loc-MNIST, Biased MNIST) list files with ``os.listdir`` / ``rglob``, whose order depends on the file
  system, so only the rule, not each pick, can be the seed's there.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from client._exceptions import DatasetError
from client.data.atomic import atomic_write_json
from client.data.datasets.base import DatasetSplits, Item, read_json_file

__all__ = ["VAL_SHOTS_MAX", "cache_path", "few_shot_indices", "sample_few_shot", "sample_per_class"]

VAL_SHOTS_MAX = 4
SAMPLER = DatasetSplits.draw_rule  # the seed's rule as most datasets need it (a DatasetSplits default)
T = TypeVar("T")


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> np.ndarray:
    """Indices of the seed's draw from an image folder's train split (labels in file order), in the
    order drawn: ``random.Random(seed).sample`` of ``shots`` per class, classes in order of appearance."""
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        by_label.setdefault(int(label), []).append(index)
    rng = random.Random(seed)
    return np.asarray(_draw_groups(list(by_label.values()), shots, rng), dtype=np.int64)


def cache_path(cache_dir: Path, shots: int, seed: int) -> Path:
    return Path(cache_dir) / f"shot_{shots}-seed_{seed}.json"


def sample_few_shot(splits: DatasetSplits, shots: int, seed: int, cache_dir: Path | None) -> DatasetSplits:
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    path = cache_path(cache_dir, shots, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        train, val = _read_cache(path, len(splits.class_names), splits.draw_rule)
        return replace(splits, train=train, val=val if splits.draw_val else splits.val)
    rng = random.Random(seed)  # the seed's random.seed(cfg.SEED), one stream for train then val
    for length in splits.shuffles_before_draw:  # the seed's loader shuffles before it draws
        rng.shuffle(list(range(length)))
    train = sample_per_class(splits.train, shots, rng)
    val = sample_per_class(splits.val, min(shots, VAL_SHOTS_MAX), rng) if splits.draw_val else splits.val
    if path is not None:
        payload = {"shots": shots, "seed": seed, "sampler": splits.draw_rule, "train": _dump(train)}
        payload["val"] = _dump(val) if splits.draw_val else []
        atomic_write_json(path, payload)
    return replace(splits, train=train, val=val)


def sample_per_class(items: list[Item], shots: int, rng: random.Random) -> list[Item]:
    """The seed's rule: classes in order of first appearance, ``rng.sample(members, shots)`` for a
    class with at least ``shots`` items (in the order drawn), all items of a smaller class."""
    by_label: dict[int, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    return _draw_groups(list(by_label.values()), shots, rng)


def _draw_groups(groups: list[list[T]], shots: int, rng: random.Random) -> list[T]:
    chosen: list[T] = []
    for members in groups:
        chosen.extend(rng.sample(members, shots) if len(members) >= shots else members)
    return chosen


def _dump(items: list[Item]) -> list[list[Any]]:
    return [[str(item.path), item.label] for item in items]


def _read_cache(path: Path, num_classes: int, rule: str) -> tuple[list[Item], list[Item]]:
    data = read_json_file(path)
    if not isinstance(data, dict) or data.get("sampler") != rule:
        found = data.get("sampler", "an older rule") if isinstance(data, dict) else "unknown"
        raise DatasetError(
            f"few-shot cache {path} was drawn by {found}, not the seed's rule ({rule}); "
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
