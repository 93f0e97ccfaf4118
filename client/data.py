"""Image-folder datasets, few-shot sampling and the step-by-step batch sampler.

Layout: ``ROOT/{train,val,test}/<class name>/<image files>``; ``val`` is optional. Class names are
the sorted sub-folder names of ``train`` (underscores read as spaces in prompts). Images are resized
(shorter side) and centre-cropped to the server's input size and kept as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from client._exceptions import DatasetError

__all__ = ["BatchSampler", "DatasetError", "ImageSet", "few_shot_indices", "load_image_folder"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageSet:
    pixels: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]

    def subset(self, indices: np.ndarray) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.pixels[index], self.labels[index], self.class_names)

    def __len__(self) -> int:
        return len(self.labels)


def load_image_folder(
    root: Path, split: str, image_size: int, class_names: list[str] | None = None
) -> ImageSet:
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"missing split folder {folder} (expected ROOT/{split}/<class>/<images>)")
    names = class_names or sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise DatasetError(f"{folder} has no class sub-folders")
    pixels, labels = [], []
    for label, name in enumerate(names):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            pixels.append(read_image(path, image_size))
            labels.append(label)
    if not pixels:
        raise DatasetError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageSet(torch.from_numpy(np.stack(pixels)), torch.tensor(labels, dtype=torch.int64), names)


def read_image(path: Path, image_size: int) -> np.ndarray:
    """(3, S, S) uint8: shorter side resized to S (bicubic), then centre-cropped."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = image_size / min(image.size)
        size = (max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
        left, top = (image.width - image_size) // 2, (image.height - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


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


class BatchSampler:
    """Batches drawn from shuffled epochs; its state is checkpointed so a resume draws the same."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size = size, min(batch_size, size)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(size)
        self.position = 0

    def next_batch(self) -> np.ndarray:
        if self.position + self.batch_size > self.size:  # drop the tail, as a drop-last loader does
            self.order = self.rng.permutation(self.size)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position = int(state["position"])
