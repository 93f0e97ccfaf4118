"""Model loading through the real open_clip code path: shipped configs, local checkpoints,
hub tags (offline here, so the failure must say what to do), and seeded random init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.flags import parse_args
from server.serving.clip_model import ClipBackend, ModelLoadError
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


def _activations(model: torch.nn.Module) -> set[str]:
    import open_clip

    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, open_clip.transformer.QuickGELU)}
    kinds |= {type(m).__name__ for m in model.modules() if type(m) is torch.nn.GELU}
    return kinds


@pytest.mark.parametrize(
    ("argv", "quick"),
    [
        (["--pretrained", "openai"], True),  # OpenAI's weights were trained with QuickGELU
        (["--pretrained", "laion2b_s34b_b88k"], False),
        (["--random-init"], False),
        (["--random-init", "--quick-gelu", "on"], True),
        (["--checkpoint", "/w/openai-b16.pt"], False),  # a file says nothing: the flag decides
        (["--checkpoint", "/w/openai-b16.pt", "--quick-gelu", "on"], True),
        (["--pretrained", "openai", "--quick-gelu", "off"], False),
    ],
)
def test_quick_gelu_follows_the_weights(argv: list[str], quick: bool) -> None:
    from server.serving.clip_model import uses_quick_gelu

    settings = parse_args(["--model", "ViT-B-16", *argv], env={})
    assert uses_quick_gelu(settings) is quick


def test_vit_b16_is_built_with_quick_gelu_when_asked(tmp_path: Path) -> None:
    # The real build path, no download: random init with the activation --pretrained openai would get.
    quick = load(tmp_path, "--model", "ViT-B-16", "--random-init", "--quick-gelu", "on")
    assert _activations(quick.model) == {"QuickGELU"}
    assert quick.image_size == 224
    plain = load(tmp_path, "--model", "ViT-B-16", "--random-init")
    assert _activations(plain.model) == {"GELU"}  # open_clip's config: why the tag must switch it


def test_a_checkpoint_can_be_served_with_quick_gelu(tmp_path: Path) -> None:
    source = load(tmp_path, "--random-init", "--seed", "5")
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.model.state_dict()}, path)
    served = load(tmp_path, "--checkpoint", str(path), "--quick-gelu", "on")
    assert _activations(served.model) == {"QuickGELU"}
    assert _activations(source.model) == {"GELU"}
    assert not np.allclose(logits_of(served), logits_of(source))  # the activation changes every logit
