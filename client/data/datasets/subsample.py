"""CoCoOp's base-to-new split of the classes (the seed's ``DATASET.SUBSAMPLE_CLASSES``, its
``OxfordPets.subsample_classes``): the labels present in the (few-shot) train split, sorted, cut at
ceil(n / 2); ``base`` keeps the first half, ``new`` the second, each relabelled 0..m-1 in label order.
Applied after the few-shot draw, to train, val and test alike, as the seed does."""

from __future__ import annotations

import math

from client._exceptions import DatasetError
from client.data.datasets.base import DatasetSplits, Item

__all__ = ["SUBSAMPLE_CHOICES", "kept_labels", "subsample_splits"]

SUBSAMPLE_CHOICES = ("all", "base", "new")


def kept_labels(train_labels: list[int], mode: str) -> list[int]:
    """The original labels that ``mode`` keeps, in order (their index is the new label)."""
    if mode not in SUBSAMPLE_CHOICES:
        raise DatasetError(f"subsample_classes must be one of {', '.join(SUBSAMPLE_CHOICES)}, got {mode!r}")
    labels = sorted(set(train_labels))
    if mode == "all":
        return labels
    cut = math.ceil(len(labels) / 2)
    return labels[:cut] if mode == "base" else labels[cut:]


def subsample_splits(splits: DatasetSplits, mode: str) -> DatasetSplits:
    if mode == "all":
        return splits
    kept = kept_labels([item.label for item in splits.train], mode)
    if not kept:
        raise DatasetError(f"--subsample-classes {mode} keeps no class: the train split has too few labels")
    relabel = {old: new for new, old in enumerate(kept)}

    def keep(items: list[Item]) -> list[Item]:
        return [Item(item.path, relabel[item.label]) for item in items if item.label in relabel]

    names = [splits.class_names[old] for old in kept]
    return DatasetSplits(keep(splits.train), keep(splits.val), keep(splits.test), names)
