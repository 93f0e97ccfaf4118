"""Model loading through the real open_clip code path: shipped configs, local checkpoints,
hub tags (offline here, so the failure must say what to do), and seeded random init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.clip_model import ClipBackend, ModelLoadError
from server.settings import parse_args
from tests.helpers import random_images


def load(tmp_path: Path, *argv: str) -> ClipBackend:
    return ClipBackend.load(  # a later --model in argv wins over the tiny default
        parse_args(
            ["--model", "tiny-vit", *argv, "--ledger", str(tmp_path / "l.sqlite3"), "--device", "cpu"], env={}
        )
    )


def logits_of(backend: ClipBackend) -> np.ndarray:
    features = backend.encode_texts(["a", "b", "c"], ["{}"])
    return backend.logits(random_images(4, "float32", seed=3), features).logits


def test_shipped_tiny_config_loads_and_random_init_is_reproducible_by_seed(tmp_path: Path) -> None:
    first, again = load(tmp_path, "--random-init"), load(tmp_path, "--random-init")
    other_seed = load(tmp_path, "--random-init", "--seed", "7")
    assert first.image_size == 32
    np.testing.assert_array_equal(logits_of(first), logits_of(again))
    assert not np.allclose(logits_of(first), logits_of(other_seed))


def test_a_local_checkpoint_serves_exactly_its_weights(tmp_path: Path) -> None:
    source = load(tmp_path, "--random-init", "--seed", "11")
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.model.state_dict()}, path)
    served = load(tmp_path, "--checkpoint", str(path))
    np.testing.assert_allclose(logits_of(served), logits_of(source), rtol=1e-6)


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path, "--checkpoint", str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="junk.pt does not load into tiny-vit"):
        load(tmp_path, "--checkpoint", str(junk))


def test_unknown_model_and_unknown_tag_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        load(tmp_path, "--model", "no-such-model", "--random-init")
    with pytest.raises(ModelLoadError, match="no pretrained tag 'nope'"):
        load(tmp_path, "--model", "ViT-B-32", "--pretrained", "nope")
