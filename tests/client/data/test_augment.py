"""Train-time augmentation for benchmark datasets: torchvision-style random resized crop and flip,
drawn from a generator so that a resumed job repeats the same crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from client.data.images import FileImageSet, random_resized_crop


def gradient_image(width: int = 60, height: int = 40) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    return Image.fromarray(x)


def test_crops_are_the_right_size_and_repeat_with_the_generator_state() -> None:
    image = gradient_image()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    first = [random_resized_crop(image, 32, generator) for _ in range(5)]
    generator.set_state(state)
    again = [random_resized_crop(image, 32, generator) for _ in range(5)]
    assert all(c.shape == (3, 32, 32) and c.dtype == np.uint8 for c in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({c.tobytes() for c in first}) == 5  # five different crops


def test_flips_happen_about_half_the_time() -> None:
    image = gradient_image()  # brightness rises to the right unless flipped
    generator = torch.Generator().manual_seed(1)
    crops = [random_resized_crop(image, 16, generator) for _ in range(200)]
    flipped = sum(int(c[0, 8, 0]) > int(c[0, 8, -1]) for c in crops)
    assert 70 < flipped < 130


def test_file_image_set_reads_with_and_without_augmentation(tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        gradient_image(50 + 10 * index, 40).save(path)
        paths.append(path)
    labels = torch.tensor([0, 1, 0])
    plain = FileImageSet(paths, labels, ["a", "b"], image_size=24)
    assert plain.images(range(3)).shape == (3, 3, 24, 24)
    assert torch.equal(plain.images([1]), plain.images([1]))  # test-time: resize + centre crop, fixed
    augmented = FileImageSet(paths, labels, ["a", "b"], image_size=24, augment=True)
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(augmented.images([0, 0], generator)[0], augmented.images([0, 0], generator)[1])
