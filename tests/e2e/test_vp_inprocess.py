"""bench/vp_inprocess.py (the NOT black-box VP references): the clamp is the only difference between
the client's VP and the seed's, the client's PaddingPrompt is the clamped one, and the white-box
schedule is the seed's VPWB (linear warm-up from 0.1 over 10%, then cosine from lr 40)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from vp_inprocess import lr_at, prompted  # noqa: E402

from client.training.prompters import PaddingPrompt, PixelSpace  # noqa: E402

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_the_clamp_is_the_only_difference_and_the_client_pads_are_clamped() -> None:
    space = PixelSpace(MEAN, STD)
    prompter = PaddingPrompt(32, space, seed=1)
    with torch.no_grad():
        prompter.pad_up.mul_(10.0)  # pads far outside the valid range
        frame, pixels = prompter.frame(), torch.rand(2, 3, 32, 32)
        clip = SimpleNamespace(space=space)
        clamped = prompted(clip, prompter, frame, pixels, clamp=True)  # type: ignore[arg-type]
        free = prompted(clip, prompter, frame, pixels, clamp=False)  # type: ignore[arg-type]
        client = space.normalise(prompter.apply(pixels, None))
    assert torch.allclose(client, clamped, atol=1e-5)  # the client's VP is the clamped one
    assert torch.equal(space.clip(free), clamped)
    assert bool((free > space.high).any()) and not bool((clamped > space.high + 1e-6).any())
    inner = (slice(None), slice(None), slice(4, 28), slice(4, 28))
    assert torch.equal(free[inner], clamped[inner])  # the centre is untouched either way


def test_the_whitebox_schedule_is_the_seeds() -> None:
    total = 100
    rates = [lr_at(step, total) for step in range(total)]
    assert rates[0] == 0.1 and rates[10] == 40.0
    assert rates[5] == 20.0  # linear warm-up
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # cosine, decreasing
