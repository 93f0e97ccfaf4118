"""What every dataset loader returns, and the checks and readers they share.

A loader takes ``$DATA`` (the folder holding all datasets), finds its own sub-folder, and returns
the full train/val/test lists (image path + integer label) with the class names indexed by label.
Nothing here opens an image: the first image of each split is checked to exist so that a wrong
image folder fails at load time, and everything else is left to the reader of the images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client._exceptions import DatasetError

__all__ = [
    "list_class_folders",
    "listdir_order",
    "SPLITS",
    "DatasetSplits",
    "Item",
    "JsonSplitSpec",
    "check_first_images",
    "class_names_from",
    "list_files",
    "load_json_split",
    "read_json_file",
    "read_split_entries",
    "require_dir",
    "require_file",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    path: Path
    label: int


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's splits, and what the seed's loader does to its random stream before the few-shot draw
    (``client/data/fewshot.py``), so that the same seed picks the same images as the seed's loader."""

    train: list[Item]
    val: list[Item]
    test: list[Item]
    class_names: list[str]
    # lengths of the lists the seed's loader shuffles with Python's seeded ``random`` before it draws
    # (SVHN: each class's train and test folder listing, class by class), replayed before the draw
    shuffles_before_draw: tuple[int, ...] = ()
    # False where the seed keeps the whole val split (ImageNet: val is the test set, never subsampled)
    draw_val: bool = True
    # the draw's name in few-shot cache files: a dataset whose listing or stream differs has its own
    draw_rule: str = "python-random-v1"


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"missing folder {path}: {what}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"missing file {path}: {what}")
    return path


def read_json_file(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read JSON file {path}: {exc}") from exc


def read_split_entries(split_file: Path, data: Any, split: str, image_root: Path) -> list[tuple[Item, str]]:
    """One split of a CoOp-style split file: ``[[relative image path, label, class name], ...]``."""
    if not isinstance(data, dict) or not isinstance(data.get(split), list):
        raise DatasetError(f"split file {split_file} has no {split!r} list (expected train/val/test lists)")
    entries = []
    for position, entry in enumerate(data[split]):
        try:
            if not isinstance(entry, list | tuple):
                raise TypeError(f"not a list: {entry!r}")
            relative, label, name = entry
            item = Item(image_root / str(relative), int(label))
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"split file {split_file}: {split}[{position}] is {entry!r}, "
                "expected [relative image path, label, class name]"
            ) from exc
        if item.label < 0:
            raise DatasetError(f"split file {split_file}: {split}[{position}] has a negative label")
        entries.append((item, str(name)))
    return entries


def class_names_from(pairs: Iterable[tuple[int, str]], source: Path) -> list[str]:
    """Class names indexed by label, from (label, name) pairs; every label 0..N-1 must have one name."""
    names: dict[int, str] = {}
    for label, name in pairs:
        if names.setdefault(label, name) != name:
            raise DatasetError(f"{source}: label {label} is named both {names[label]!r} and {name!r}")
    if not names:
        raise DatasetError(f"{source} lists no images")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if missing:
        raise DatasetError(f"{source}: labels {missing[:10]} have no images (labels must run 0..N-1)")
    return [names[label] for label in range(len(names))]


def check_first_images(splits: Mapping[str, list[Item]], hint: str) -> None:
    """The first image of each split must exist: a cheap check that the image folder is the right one."""
    for split, items in splits.items():
        if items and not items[0].path.is_file():
            raise DatasetError(f"missing image {items[0].path} (first image of the {split} split): {hint}")


def list_class_folders(split_dir: Path, label_of: dict[str, int], sort: bool = True) -> list[Item]:
    """Images under ``split_dir/<class>/``, labelled by class folder name; unknown folders are an error.
    ``sort=False`` keeps each folder's files in ``os.listdir`` order, as loaders that list them unsorted
    (the seed's ImageNet) see them: on the same file system the same seed then draws the same files."""
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in label_of]
    if unknown:
        raise DatasetError(f"{split_dir} has class folder(s) outside the class list, e.g. {unknown[0]!r}")
    lister = list_files if sort else listdir_order
    items = [Item(path, label_of[p.name]) for p in folders for path in lister(p)]
    if not items:
        raise DatasetError(f"{split_dir} holds no images (expected {split_dir}/<class>/<images>)")
    return items


def listdir_order(folder: Path) -> list[Path]:
    """The non-hidden entries of ``folder`` in ``os.listdir`` order (the seed's ``listdir_nohidden``)."""
    return [folder / name for name in os.listdir(folder) if not name.startswith(".")]


def list_files(folder: Path) -> list[Path]:
    """The non-hidden files of ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())
    return [folder / name for name in names]


@dataclass(frozen=True)
class JsonSplitSpec:
    """A dataset read from a fixed split file: ``$DATA/<folder>/<split_file>`` whose entries are paths
    relative to ``$DATA/<folder>/<image_dir>``."""

    title: str  # as the source's documentation names it
    folder: str
    image_dir: str  # "" when the split file's paths start at the dataset folder
    split_file: str
    split_source: str  # where the split file is downloaded from
    images_source: str  # where the instructions for the images are
    renames: Mapping[str, str] | None = None  # old class name -> the name used in prompts


def load_json_split(spec: JsonSplitSpec, data_root: Path) -> DatasetSplits:
    folder = require_dir(
        data_root / spec.folder, f"create it under $DATA and put {spec.title} there ({spec.images_source})"
    )
    image_root = require_dir(
        folder / spec.image_dir if spec.image_dir else folder,
        f"extract the {spec.title} images there ({spec.images_source})",
    )
    split_file = require_file(
        folder / spec.split_file,
        f"download {spec.split_file} from {spec.split_source} and put it in {folder}/",
    )
    data = read_json_file(split_file)
    renames = spec.renames or {}
    lists: dict[str, list[Item]] = {}
    pairs: list[tuple[int, str]] = []
    for split in SPLITS:
        entries = read_split_entries(split_file, data, split, image_root)
        lists[split] = [item for item, _ in entries]
        pairs.extend((item.label, renames.get(name, name)) for item, name in entries)
    names = class_names_from(pairs, split_file)
    hint = f"expected the images of {split_file} under {image_root} ({spec.images_source})"
    check_first_images(lists, hint)
    return DatasetSplits(lists["train"], lists["val"], lists["test"], names)
