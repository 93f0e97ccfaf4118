"""A job's inputs: the few-shot train set, the evaluation sets (loaded or listed up front, so a
missing split fails before anything is spent) and the class names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from client.data.datasets import DATASETS
from client.data.datasets.subsample import kept_labels, subsample_splits
from client.data.fewshot import few_shot_indices
from client.data.images import FileImageSet, ImageSet, load_image_folder
from client.training.config import ConfigError, TrainConfig

__all__ = ["ImageSource", "Inputs", "fewshot_cache_dir", "load_inputs"]

ImageSource = ImageSet | FileImageSet


@dataclass(frozen=True)
class Inputs:
    train: ImageSource
    evals: dict[str, ImageSource]
    class_names: list[str]


def load_inputs(config: TrainConfig, image_size: int) -> Inputs:
    """A benchmark dataset name reads ``config.data`` as ``$DATA`` in the seed's layouts; anything else
    reads it as an image folder ROOT/{train,val,test}/<class>."""
    if config.dataset in DATASETS:
        return _benchmark_data(config, image_size)
    if config.augment:
        raise ConfigError("--augment applies to benchmark datasets; image folders are used as they are")
    full_train = load_image_folder(config.data, "train", image_size)
    train = full_train.subset(few_shot_indices(full_train.labels, config.shots, config.seed))
    kept = kept_labels(train.labels.tolist(), config.subsample_classes)
    train = _keep_classes(train, kept)
    evals = {
        split: _keep_classes(load_image_folder(config.data, split, image_size, full_train.class_names), kept)
        for split in config.eval_splits
    }
    return Inputs(train, evals, train.class_names)


def _keep_classes(images: ImageSet, kept: list[int]) -> ImageSet:
    """The images of the ``kept`` labels, relabelled by their position in ``kept`` (base/new split)."""
    if kept == list(range(len(images.class_names))):
        return images
    relabel = torch.full((len(images.class_names),), -1, dtype=torch.int64)
    relabel[torch.tensor(kept)] = torch.arange(len(kept))
    new_labels = relabel[images.labels]
    index = torch.nonzero(new_labels >= 0).flatten()
    names = [images.class_names[label] for label in kept]
    return ImageSet(images.pixels[index], new_labels[index], names)


def _benchmark_data(config: TrainConfig, image_size: int) -> Inputs:
    from client.data.datasets import load_dataset
    from client.data.fewshot import sample_few_shot

    splits = load_dataset(config.dataset, config.data)
    few = sample_few_shot(splits, config.shots, config.seed, fewshot_cache_dir(config))
    few = subsample_splits(few, config.subsample_classes)  # after the draw, as the seed
    names = few.class_names

    def listed(items: list, augment: bool) -> FileImageSet:
        labels = torch.tensor([item.label for item in items], dtype=torch.int64)
        return FileImageSet([item.path for item in items], labels, names, image_size, augment)

    augment = True if config.augment is None else config.augment  # the seed augments transfer datasets
    chosen = {"train": few.train, "val": few.val, "test": few.test}
    unknown = [split for split in config.eval_splits if split not in chosen]
    if unknown:
        raise ConfigError(f"unknown evaluation split(s) {unknown}: use train, val or test")
    evals = {split: listed(chosen[split], False) for split in config.eval_splits}
    return Inputs(listed(few.train, augment), evals, names)


def fewshot_cache_dir(config: TrainConfig) -> Path:
    if config.fewshot_cache is not None:
        return config.fewshot_cache / config.dataset
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "blackvip-sim" / "fewshot" / config.dataset
