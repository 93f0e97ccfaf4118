"""The 11 datasets prepared as CoOp's DATASETS.md describes (https://github.com/KaiyangZhou/CoOp).

Nine read CoOp's fixed ``split_zhou_*.json`` files, each ``{"train"|"val"|"test": [[relative path,
label, class name], ...]}``; their class names are taken from the file (CoOp's renames are already in
it). FGVCAircraft reads the dataset's own ``images_variant_{train,val,test}.txt`` and ``variants.txt``;
ImageNet lists ``images/train`` and ``images/val`` (the val set is the test set, as in CoOp) and names
the classes from ``classnames.txt``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from client._exceptions import DatasetError
from client.data.datasets.base import (
    DatasetSplits,
    Item,
    JsonSplitSpec,
    check_first_images,
    list_class_folders,
    load_json_split,
    require_dir,
    require_file,
)

__all__ = ["COOP_DATASETS", "load_fgvc_aircraft", "load_imagenet"]

DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
SPLIT_SOURCE = f"the CoOp repository's DATASETS.md link ({DATASETS_MD}#{{anchor}})"
IMAGES_SOURCE = f"see {DATASETS_MD}#{{anchor}}"

# CoOp wrote these renames into its split files when it made them (datasets/caltech101.py and eurosat.py,
# NEW_CNAMES); they are applied again here so that a split file holding the original folder names reads the
# same. The split files themselves sit behind Google Drive links and were not opened: that the published
# files hold the renamed names (and SUN397's "outdoor apartment_building", UCF101's "Apply_Eye_Makeup",
# StanfordCars' year-first names) was checked against a public dump of class names as CoOp loads them.
CALTECH101_RENAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "SeaLake": "Sea or Lake",
}


def _coop_spec(
    title: str,
    anchor: str,
    folder: str,
    image_dir: str,
    split_file: str,
    renames: dict[str, str] | None = None,
) -> JsonSplitSpec:
    return JsonSplitSpec(
        title=title,
        folder=folder,
        image_dir=image_dir,
        split_file=split_file,
        split_source=SPLIT_SOURCE.format(anchor=anchor),
        images_source=IMAGES_SOURCE.format(anchor=anchor),
        renames=renames,
    )


# Paths in each split file are relative to <folder>/<image_dir> (StanfordCars: to the folder itself,
# e.g. "cars_train/00001.jpg"; CoOp's stanford_cars.py reads the split with the dataset folder as prefix).
SPECS = {
    "caltech101": _coop_spec(
        "Caltech101",
        "caltech101",
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        CALTECH101_RENAMES,
    ),
    "oxford_pets": _coop_spec(
        "OxfordPets", "oxfordpets", "oxford_pets", "images", "split_zhou_OxfordPets.json"
    ),
    "stanford_cars": _coop_spec(
        "StanfordCars", "stanfordcars", "stanford_cars", "", "split_zhou_StanfordCars.json"
    ),
    "oxford_flowers": _coop_spec(
        "Flowers102", "flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"
    ),
    "food101": _coop_spec("Food101", "food101", "food-101", "images", "split_zhou_Food101.json"),
    "sun397": _coop_spec("SUN397", "sun397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": _coop_spec("DTD", "dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": _coop_spec(
        "EuroSAT", "eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json", EUROSAT_RENAMES
    ),
    "ucf101": _coop_spec("UCF101", "ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}

FGVC_SPLIT_FILES = {
    "train": "images_variant_train.txt",
    "val": "images_variant_val.txt",
    "test": "images_variant_test.txt",
}


def load_fgvc_aircraft(data_root: Path) -> DatasetSplits:
    """``fgvc_aircraft/`` is the archive's ``data/`` folder: ``variants.txt`` (one class a line, in label
    order), ``images_variant_<split>.txt`` (``<image id> <variant>``) and ``images/<image id>.jpg``."""
    hint = (
        "extract fgvc-aircraft-2013b.tar.gz and move its data/ to $DATA/fgvc_aircraft "
        f"(see {DATASETS_MD}#fgvcaircraft)"
    )
    folder = require_dir(data_root / "fgvc_aircraft", hint)
    image_root = require_dir(folder / "images", hint)
    variants_file = require_file(folder / "variants.txt", hint)
    names = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{variants_file} lists no variants")
    label_of = {name: label for label, name in enumerate(names)}
    lists = {
        split: _read_fgvc_split(require_file(folder / file, hint), image_root, label_of)
        for split, file in FGVC_SPLIT_FILES.items()
    }
    check_first_images(lists, f"expected images/<image id>.jpg under {folder} ({hint})")
    return DatasetSplits(lists["train"], lists["val"], lists["test"], names)


def _read_fgvc_split(path: Path, image_root: Path, label_of: dict[str, int]) -> list[Item]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        if variant not in label_of:
            raise DatasetError(f"{path}:{number}: variant {variant!r} is not in variants.txt")
        items.append(Item(image_root / f"{image_id}.jpg", label_of[variant]))
    return items


IMAGENET_DRAW = "python-random-v1+listdir-order"


def load_imagenet(data_root: Path) -> DatasetSplits:
    """``imagenet/images/{train,val}/<wnid>/<images>`` and ``imagenet/classnames.txt``
    (``<wnid> <class name>`` a line). Labels follow the sorted wnid folders of ``train``; ``val`` is the
    test set, and CoOp also uses it as the validation set (its datasets/imagenet.py)."""
    hint = f"see {DATASETS_MD}#imagenet"
    folder = require_dir(data_root / "imagenet", f"create it under $DATA and put ImageNet there ({hint})")
    train_dir = require_dir(folder / "images" / "train", f"extract the ImageNet training set there ({hint})")
    val_dir = require_dir(
        folder / "images" / "val", f"extract the ImageNet validation set there, one folder per wnid ({hint})"
    )
    names_file = require_file(
        folder / "classnames.txt", f"download classnames.txt from the link in {DATASETS_MD}#imagenet"
    )
    name_of = _read_imagenet_classnames(names_file)
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not wnids:
        raise DatasetError(f"{train_dir} has no class folders (expected one folder per wnid, e.g. n01440764)")
    unnamed = [wnid for wnid in wnids if wnid not in name_of]
    if unnamed:
        raise DatasetError(f"{names_file} has no name for {len(unnamed)} class folder(s), e.g. {unnamed[0]}")
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    # The seed lists each class's files unsorted (os.listdir) and draws 16 shots from train only, keeping
    # val = test whole: listed and drawn the same way, the same seed picks the seed's files.
    train = list_class_folders(train_dir, label_of, sort=False)
    test = list_class_folders(val_dir, label_of, sort=False)
    names = [name_of[wnid] for wnid in wnids]
    return DatasetSplits(train, list(test), test, names, draw_val=False, draw_rule=IMAGENET_DRAW)


def _read_imagenet_classnames(path: Path) -> dict[str, str]:
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            names[wnid] = name.strip()
    return names


COOP_DATASETS = {
    **{name: partial(load_json_split, spec) for name, spec in SPECS.items()},
    "fgvc_aircraft": load_fgvc_aircraft,
    "imagenet": load_imagenet,
}
