"""The paper's 14 transfer datasets, read from the folder layouts and fixed split files of CoOp
(https://github.com/KaiyangZhou/CoOp, DATASETS.md) and BlackVIP (https://github.com/changdaeoh/BlackVIP,
README "Data preparation"), all under one folder ``$DATA``::

    splits = load_dataset("oxford_pets", Path("$DATA"))        # full train/val/test + class names
    few = sample_few_shot(splits, shots=16, seed=1, cache_dir)  # client.data.fewshot

Keys are the dataset presets of ``client/presets.toml``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from client._exceptions import DatasetError
from client.data.datasets.base import DatasetSplits, Item
from client.data.datasets.blackvip import BLACKVIP_DATASETS
from client.data.datasets.coop import COOP_DATASETS

__all__ = ["DATASETS", "DatasetError", "DatasetSplits", "Item", "load_dataset"]

_ORDER = (  # the paper's table order
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "svhn",
    "eurosat",
    "resisc45",
    "clevr",
    "ucf101",
    "imagenet",
)
_LOADERS: dict[str, Callable[[Path], DatasetSplits]] = {**COOP_DATASETS, **BLACKVIP_DATASETS}
DATASETS: dict[str, Callable[[Path], DatasetSplits]] = {name: _LOADERS[name] for name in _ORDER}


def load_dataset(name: str, data_root: Path) -> DatasetSplits:
    """The full splits of dataset ``name`` under ``data_root`` (``$DATA``, the folder holding them all)."""
    loader = DATASETS.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loader(Path(data_root))
