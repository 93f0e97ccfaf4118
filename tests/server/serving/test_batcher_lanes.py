"""Lanes of the dynamic batcher (requests asking another precision, e.g. fp32 evaluation on an fp16
server): a forward never mixes two lanes, each lane's rows go through its own forward, and the rows
of other lanes keep their places for the next forward."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from server.serving.batcher import DynamicBatcher
from tests.helpers import random_images
from tests.server.serving.test_batcher import Recorder, expected


def _submit(batcher: DynamicBatcher, images: np.ndarray, lane: str | None, results: dict, name: str):
    thread = threading.Thread(target=lambda: results.__setitem__(name, batcher.submit(images, lane)))
    thread.start()
    return thread


def _wait_queued(batcher: DynamicBatcher, images: int) -> None:
    for _ in range(2000):
        if batcher.queued_images == images:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"queue holds {batcher.queued_images} images, expected {images}")


def test_forwards_never_mix_lanes_and_other_lanes_keep_their_places() -> None:
    serving, fp32 = Recorder(), Recorder()
    batcher = DynamicBatcher(serving, 4, 0.0, 1000, lanes={"fp32": fp32})
    images = {name: random_images(n, "float32", seed=i) for i, (name, n) in enumerate(
        [("a", 2), ("b", 2), ("c", 2), ("d", 1)])}  # fmt: skip
    results: dict = {}
    try:
        serving.gate.clear()
        threads = [_submit(batcher, images["a"], None, results, "a")]
        serving.entered.acquire(timeout=10)  # the worker is inside a's forward
        for name, lane in (("b", "fp32"), ("c", None), ("d", "fp32")):
            threads.append(_submit(batcher, images[name], lane, results, name))
            _wait_queued(batcher, sum(len(images[n]) for n in "bcd"[: "bcd".index(name) + 1]))
        serving.gate.set()
        for thread in threads:
            thread.join(10)
    finally:
        batcher.close(timeout=10)
    assert serving.sizes == [2, 2]  # a, then c: never b's or d's rows
    assert fp32.sizes == [3]  # b and d together, ahead of c (b was older than c)
    for name, batch in zip("ac", serving.batches, strict=True):
        assert torch.equal(batch, expected(images[name]))
    assert torch.equal(fp32.batches[0], expected(np.concatenate([images["b"], images["d"]])))
    for name in "abcd":
        assert torch.equal(results[name][0], expected(images[name]))


def test_an_unknown_lane_is_refused_before_it_is_queued() -> None:
    batcher = DynamicBatcher(Recorder(), 4, 0.0, 1000)
    try:
        with pytest.raises(ValueError, match="no lane 'fp32'"):
            batcher.submit(random_images(1, "float32"), "fp32")
        assert batcher.queued_images == 0
    finally:
        batcher.close(timeout=10)
