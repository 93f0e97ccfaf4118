"""toy-digits, the small CLIP made in this repository: it loads offline through the server's own
loading path, classifies held-out digits of both sources zero-shot (its own scikit-learn digits and real
MNIST handwriting), is fooled by the Loc tasks' distractor, and its recipe still trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digits.sources import NUMBER_WORDS
from digits.tasks import build_split
from server.flags import parse_args
from server.serving.clip_model import ClipBackend
from server.settings import shipped_weights

# Measured on the shipped checkpoint through the server: 0.982 (digits) and 0.946 (mnist-digits) on these
# splits (1,000 images each); the floors leave room for CPU-to-CPU float differences, not for a different
# model. 0.90 on real MNIST is what the model was retrained for (issue 16).
ZERO_SHOT_FLOOR = {"digits": 0.95, "mnist-digits": 0.90}
LOC_OF = {"digits": "loc-digits-1x1", "mnist-digits": "loc-mnist-digits-1x1"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> ClipBackend:
    ledger = tmp_path_factory.mktemp("ledger") / "l.sqlite3"
    return ClipBackend.load(parse_args(["--ledger", str(ledger), "--device", "cpu"], env={}))


def test_shipped_checkpoint_is_small_and_is_the_default() -> None:
    path = shipped_weights("toy-digits")
    assert path is not None and path.stat().st_size < 20 * 2**20
    settings = parse_args([], env={})
    assert settings.model == "toy-digits" and settings.checkpoint == path
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state["state_dict"]
    floats = {name: tensor.dtype for name, tensor in weights.items() if tensor.is_floating_point()}
    assert floats and set(floats.values()) == {torch.float16}  # stored as fp16, as docs/digits.md says


@pytest.mark.parametrize("centred", sorted(ZERO_SHOT_FLOOR))
def test_zero_shot_on_held_out_centred_digits_is_above_the_floor(backend: ClipBackend, centred: str) -> None:
    assert backend.image_size == 32
    text = backend.encode_texts(list(NUMBER_WORDS), ["a photo of the number {}."])
    images, labels = build_split(centred, "test", seed=0)
    logits = backend.logits(images, text).logits
    accuracy = float((logits.argmax(1) == labels).mean())
    assert accuracy >= ZERO_SHOT_FLOOR[centred], accuracy
    shifted, shifted_labels = build_split(LOC_OF[centred], "test", seed=0)
    loc_accuracy = float((backend.logits(shifted, text).logits.argmax(1) == shifted_labels).mean())
    assert loc_accuracy <= 0.25, loc_accuracy  # the distractor fools it: the task needs a prompt


def test_a_short_run_of_the_recipe_still_trains() -> None:
    from recipes.toy_digits import parse_args as recipe_args
    from recipes.toy_digits import pretrain

    # The first 300 of the recipe's 3,600 steps, on its own schedule: the shipped run left the loss
    # plateau (about 4.85) by step 150 and was at 4.46 by step 300.
    _, _, losses = pretrain(recipe_args(["--stop-after", "300"]))
    first, last = np.mean(losses[:25]), np.mean(losses[-25:])
    assert len(losses) == 300
    assert last < first - 0.2, (first, last)
