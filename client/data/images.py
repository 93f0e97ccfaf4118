"""Image sets: decoded in memory or read from files when a batch needs them.

- :class:`ImageSet`: decoded in memory, from an image folder ``ROOT/{train,val,test}/<class>/<files>``
  (``val`` optional; class names are the sorted sub-folders of ``train``, underscores read as spaces).
- :class:`FileImageSet`: files read when a batch needs them (the benchmark datasets, some large), with the
  seed's train-time augmentation (random resized crop + horizontal flip) when asked for.
Test-time images are resized (shorter side, bicubic) and centre-cropped to the server's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client._exceptions import DatasetError

__all__ = [
    "DatasetError",
    "FileImageSet",
    "ImageSet",
    "load_image_folder",
    "random_resized_crop",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageSet:
    pixels: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]

    def subset(self, indices: np.ndarray) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.pixels[index], self.labels[index], self.class_names)

    def images(self, indices: np.ndarray | range, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.pixels[torch.as_tensor(np.asarray(indices), dtype=torch.int64)]  # (B, 3, S, S) uint8

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FileImageSet:
    paths: list[Path]
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]
    image_size: int
    augment: bool = False

    def images(self, indices: np.ndarray | range, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, S, S) uint8; augmented draws come from ``generator`` so a resume repeats them."""
        from PIL import Image

        batch = []
        for index in np.asarray(indices):
            path = self.paths[int(index)]
            if not self.augment:
                batch.append(read_image(path, self.image_size))
                continue
            with Image.open(path) as image:
                batch.append(random_resized_crop(image.convert("RGB"), self.image_size, generator))
        return torch.from_numpy(np.stack(batch))

    def __len__(self) -> int:
        return len(self.labels)


def random_resized_crop(image: object, size: int, generator: torch.Generator | None) -> np.ndarray:
    """torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) then a horizontal flip with p 0.5."""
    from PIL import Image

    width, height = image.size
    area = width * height
    box = None
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(0.08, 1.0, generator=generator))
        log_ratio = torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3), generator=generator)
        ratio = float(torch.exp(log_ratio))
        w, h = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            box = (left, top, left + w, top + h)
            break
    if box is None:  # torchvision's fallback: the largest centred crop within the ratio bounds
        side = min(width, height)
        box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    crop = image.crop(box).resize((size, size), Image.BICUBIC)
    if float(torch.rand(1, generator=generator)) < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1).copy()


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
