"""The three datasets BlackVIP adds to CoOp's (https://github.com/changdaeoh/BlackVIP, README "Data
preparation", datasets/svhn.py, resisc45.py, clevr.py): SVHN, Resisc45 and CLEVR (object counting).

* SVHN: ``svhn/{train,test}/<digit>/<images>`` as BlackVIP's datasets/svhn_dl.py writes them, and the
  split file ``svhn/split_mlai_SVHN.json``. BlackVIP's svhn.py reads train/val from the split file with
  paths relative to ``svhn/train`` and lists every image of ``svhn/test`` as the test set; a ``test``
  list in the split file, if present, is used instead. (Its code reads the file under the name
  ``split_SVHN.json``, which is accepted too; the README names it ``split_mlai_SVHN.json``.)
* Resisc45: ``resisc45/NWPU-RESISC45/<class>/<images>`` and ``resisc45/split_mlai_Resisc45.json``.
* CLEVR: ``CLEVR_v1.0/images/{train,val}/<images>`` and ``CLEVR_v1.0/split_mlai_CLEVR.json``; the class of
  an image is its number of objects in ``CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json``. Without the
  split file the split is rebuilt from the scene files the way BlackVIP's clevr.py builds it (train scenes
  -> train + 20 % val per class, val scenes -> test, class names = the counts sorted as strings); that
  val draw is seeded here and cannot equal the published file's.

Not confirmed (the split files sit behind Google Drive links): the contents of the three split_mlai files.
They are read as CoOp's format, which is what BlackVIP's loaders read them as; CLEVR's labels in the
published file are assumed to follow clevr.py's string order of the counts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from client._exceptions import DatasetError
from client.data.datasets.base import (
    DatasetSplits,
    Item,
    JsonSplitSpec,
    check_first_images,
    class_names_from,
    list_class_folders,
    load_json_split,
    read_json_file,
    read_split_entries,
    require_dir,
)

__all__ = ["BLACKVIP_DATASETS", "load_clevr", "load_resisc45", "load_svhn", "svhn_shuffles"]

log = logging.getLogger(__name__)

README = "https://github.com/changdaeoh/BlackVIP#data-preparation"
SPLIT_SOURCE = f"the link in the BlackVIP README ({README})"

RESISC45 = JsonSplitSpec(
    title="Resisc45",
    folder="resisc45",
    image_dir="NWPU-RESISC45",
    split_file="split_mlai_Resisc45.json",
    split_source=SPLIT_SOURCE,
    images_source=f"extract NWPU-RESISC45.rar into $DATA/resisc45, see {README}",
)
CLEVR = JsonSplitSpec(
    title="CLEVR",
    folder="CLEVR_v1.0",
    image_dir="images",
    split_file="split_mlai_CLEVR.json",
    split_source=SPLIT_SOURCE,
    images_source=f"extract CLEVR_v1.0.zip into $DATA, see {README}",
)
SVHN_SPLIT_FILES = ("split_mlai_SVHN.json", "split_SVHN.json")
SVHN_DRAW = "python-random-v1+svhn-shuffles"


def load_resisc45(data_root: Path) -> DatasetSplits:
    return load_json_split(RESISC45, data_root)


def load_svhn(data_root: Path) -> DatasetSplits:
    hint = f"run BlackVIP's datasets/svhn_dl.py, which writes svhn/{{train,test}}/<digit>/ ({README})"
    folder = require_dir(data_root / "svhn", hint)
    train_dir, test_dir = require_dir(folder / "train", hint), require_dir(folder / "test", hint)
    split_file = next((folder / n for n in SVHN_SPLIT_FILES if (folder / n).is_file()), None)
    if split_file is None:
        raise DatasetError(
            f"missing file {folder / SVHN_SPLIT_FILES[0]}: download {SVHN_SPLIT_FILES[0]} from "
            f"{SPLIT_SOURCE} and put it in {folder}/"
        )
    data = read_json_file(split_file)
    entries = {s: _entries_from_either(split_file, data, s, (train_dir, folder)) for s in ("train", "val")}
    if isinstance(data, dict) and "test" in data:
        entries["test"] = _entries_from_either(split_file, data, "test", (test_dir, folder))
    pairs = [(item.label, name) for listed in entries.values() for item, name in listed]
    names = class_names_from(pairs, split_file)
    lists = {split: [item for item, _ in listed] for split, listed in entries.items()}
    if "test" not in lists:
        lists["test"] = list_class_folders(test_dir, {name: label for label, name in enumerate(names)})
    check_first_images(lists, f"expected the images of {split_file} under {folder}/{{train,test}} ({hint})")
    shuffles = svhn_shuffles(train_dir, test_dir)
    return DatasetSplits(
        lists["train"], lists["val"], lists["test"], names, shuffles_before_draw=shuffles, draw_rule=SVHN_DRAW
    )


def svhn_shuffles(train_dir: Path, test_dir: Path) -> tuple[int, ...]:
    """The lengths of the 20 lists BlackVIP's svhn.py shuffles before its few-shot draw.

    Even with the split file present it re-runs ``read_and_split_data`` for the test list: for each class
    folder of ``train`` (sorted) it shuffles that folder's listing, then the same class's ``test`` listing,
    with the ``random`` stream the draw then uses. How many numbers a shuffle takes depends only on the
    list's length, so replaying shuffles of these lengths puts the stream where the seed's draw starts."""
    lengths: list[int] = []
    for name in sorted(e for e in os.listdir(train_dir) if not e.startswith(".")):
        for root in (train_dir, test_dir):
            lengths.append(len([e for e in os.listdir(root / name) if not e.startswith(".")]))
    return tuple(lengths)


def _entries_from_either(
    split_file: Path, data: Any, split: str, roots: tuple[Path, Path]
) -> list[tuple[Item, str]]:
    """Entries relative to ``roots[0]``, or to ``roots[1]`` when only that root holds the first image."""
    entries = read_split_entries(split_file, data, split, roots[0])
    if entries and not entries[0][0].path.is_file():
        moved = read_split_entries(split_file, data, split, roots[1])
        if moved[0][0].path.is_file():
            return moved
    return entries


def load_clevr(data_root: Path) -> DatasetSplits:
    """CLEVR count from the seed authors' split file. Without it this is an error, not a rebuilt split:
    a split drawn here would not be the published one that results are compared on."""
    return load_json_split(CLEVR, data_root)


BLACKVIP_DATASETS = {"svhn": load_svhn, "resisc45": load_resisc45, "clevr": load_clevr}
