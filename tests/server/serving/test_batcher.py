"""The dynamic batcher on its own: rows go back to the request they came from, FIFO turns, chunking,
a big request cannot starve a small one, a full queue refuses at once, padding, errors and close.
Its forward is a plain function of the pixels (each row's per-channel mean) that also records the
forwards it ran; a gate holds the worker inside a forward so the queue can be filled at will."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from server.serving.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from server.serving.plans import cheapest_plans, forward_plan
from tests.helpers import random_images


class Recorder:
    """The forward: per-row channel means (rows are told apart by them), recording each forward's
    size and rows, and waiting at ``gate`` while it is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.sizes: list[int] = []
        self.batches: list[torch.Tensor] = []
        self.fail_next = False

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.entered.release()
        self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("device fault")
        self.sizes.append(len(pixels))
        self.batches.append(pixels.mean(dim=(2, 3)))
        return pixels.mean(dim=(2, 3))


def expected(images: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0))
    return pixels.mean(dim=(2, 3))


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[DynamicBatcher, Recorder]]]:
    made: list[DynamicBatcher] = []

    def build(
        max_batch: int = 4,
        delay: float = 0.0,
        queue: int = 1000,
        shapes: tuple[int, ...] | None = None,
        shape_seconds: dict[int, float] | None = None,
    ):
        recorder = Recorder()
        seconds = shape_seconds
        batcher = DynamicBatcher(recorder, max_batch, delay, queue, shapes=shapes, shape_seconds=seconds)
        made.append(batcher)
        return batcher, recorder

    yield build
    for batcher in made:
        batcher.close(timeout=10)


def submit_async(batcher: DynamicBatcher, images: np.ndarray, results: dict, name: str) -> threading.Thread:
    def call() -> None:
        try:
            results[name] = batcher.submit(images)
        except Exception as exc:
            results[name] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def wait_queued(batcher: DynamicBatcher, images: int) -> None:
    deadline = time.monotonic() + 10
    while batcher.queued_images != images:
        assert time.monotonic() < deadline, batcher.queued_images
        time.sleep(0.005)


def hold_worker(batcher: DynamicBatcher, recorder: Recorder, results: dict) -> threading.Thread:
    """Close the gate and put one 1-image request in flight: the worker now waits inside a forward."""
    recorder.gate.clear()
    thread = submit_async(batcher, random_images(1, "uint8", seed=99), results, "held")
    assert recorder.entered.acquire(timeout=10)
    return thread


def test_rows_go_back_to_their_own_requests_across_dtypes(make) -> None:
    batcher, recorder = make(max_batch=8, delay=0.05)
    requests = {
        f"r{i}": random_images(n, dtype, seed=i)
        for i, (n, dtype) in enumerate(
            [(3, "uint8"), (1, "float32"), (5, "float16"), (2, "uint8"), (7, "uint8")]
        )
    }
    results: dict = {}
    threads = [submit_async(batcher, images, results, name) for name, images in requests.items()]
    for thread in threads:
        thread.join(timeout=30)
    for name, images in requests.items():
        features, passes = results[name]
        assert torch.allclose(features, expected(images), rtol=1e-6, atol=1e-7), name
        assert passes >= 1
    assert sum(recorder.sizes) == 18 and max(recorder.sizes) <= 8


def test_a_request_is_chunked_into_forwards_of_at_most_max_batch(make) -> None:
    batcher, recorder = make(max_batch=4)
    images = random_images(10, "uint8")
    features, passes = batcher.submit(images)
    assert recorder.sizes == [4, 4, 2] and passes == 3
    assert torch.allclose(features, expected(images), rtol=1e-6)


def test_requests_take_their_turns_in_arrival_order(make) -> None:
    batcher, recorder = make(max_batch=2)
    results: dict = {}
    held = hold_worker(batcher, recorder, results)
    threads = []
    for index, name in enumerate("ABC"):
        threads.append(submit_async(batcher, random_images(2, "uint8", seed=index), results, name))
        wait_queued(batcher, 2 * (index + 1))
    recorder.gate.set()
    for thread in [held, *threads]:
        thread.join(timeout=30)
    # one forward each (2 rows fill it), in the order the requests arrived, after the held one
    assert recorder.sizes == [1, 2, 2, 2]
    for index, name in enumerate("ABC"):
        assert torch.equal(recorder.batches[index + 1], expected(random_images(2, "uint8", seed=index)))
        assert results[name][1] == 1


def test_a_big_request_does_not_starve_a_small_one(make) -> None:
    batcher, recorder = make(max_batch=4)
    results: dict = {}
    held = hold_worker(batcher, recorder, results)
    big = submit_async(batcher, random_images(40, "uint8", seed=1), results, "big")
    wait_queued(batcher, 40)
    small_images = random_images(1, "uint8", seed=2)
    small = submit_async(batcher, small_images, results, "small")
    wait_queued(batcher, 41)
    recorder.gate.set()
    for thread in (held, big, small):
        thread.join(timeout=30)
    # forwards: the held one, one turn of the big request, then the small one shares the third
    small_row = expected(small_images)[0]
    served_in = next(
        i for i, batch in enumerate(recorder.batches) if any(torch.equal(row, small_row) for row in batch)
    )
    assert served_in <= 2 < len(recorder.batches) - 1
    # the big request's 40 rows went 4, 3 (beside the small one), 4 x 8, 1: eleven forwards
    assert results["small"][1] == 1 and results["big"][1] == 11


def test_a_full_queue_refuses_at_once_and_an_empty_one_takes_anything(make) -> None:
    batcher, recorder = make(max_batch=4, queue=6)
    results: dict = {}
    held = hold_worker(batcher, recorder, results)
    waiting = submit_async(batcher, random_images(5, "uint8"), results, "waiting")
    wait_queued(batcher, 5)
    with pytest.raises(QueueFullError) as refused:
        batcher.submit(random_images(2, "uint8"))
    assert (refused.value.queued, refused.value.limit, refused.value.requested) == (5, 6, 2)
    recorder.gate.set()
    held.join(timeout=30)
    waiting.join(timeout=30)
    features, _ = batcher.submit(random_images(50, "uint8"))  # larger than the queue, but it is empty
    assert features.shape == (50, 3)


def test_padding_gives_every_forward_the_same_shape(make) -> None:
    batcher, recorder = make(max_batch=8, shapes=(2, 5))
    images = random_images(11, "float32")
    features, passes = batcher.submit(images)
    assert recorder.sizes == [5, 5, 5] and passes == 2  # batches of 8 rows (5, then 3 padded to 5), 3 rows
    assert forward_plan(1, (4, 16, 64)) == [4] and forward_plan(70, (4, 16, 64)) == [64, 16]
    assert torch.allclose(features, expected(images), rtol=1e-6)


def test_a_failed_forward_fails_its_requests_and_the_worker_goes_on(make) -> None:
    batcher, recorder = make(max_batch=4)
    recorder.fail_next = True
    with pytest.raises(RuntimeError, match="device fault"):
        batcher.submit(random_images(10, "uint8"))
    assert batcher.queued_images == 0  # the failed request's other rows were dropped
    features, _ = batcher.submit(random_images(3, "uint8"))
    assert features.shape == (3, 3)


def test_close_answers_what_is_queued_then_refuses(make) -> None:
    batcher, recorder = make(max_batch=2)
    results: dict = {}
    held = hold_worker(batcher, recorder, results)
    queued = submit_async(batcher, random_images(5, "uint8"), results, "queued")
    wait_queued(batcher, 5)
    closer = threading.Thread(target=batcher.close, args=(30,))
    closer.start()
    recorder.gate.set()
    for thread in (held, queued, closer):
        thread.join(timeout=30)
    assert results["queued"][0].shape == (5, 3)
    with pytest.raises(BatcherClosedError):
        batcher.submit(random_images(1, "uint8"))


def test_the_worker_does_not_wait_for_callers_that_are_all_queued() -> None:
    recorder = Recorder()
    # a delay no test would survive: the lone caller is answered only if the worker skips it
    batcher = DynamicBatcher(recorder, 64, 600.0, 1000, callers=lambda: 1)
    results: dict = {}
    try:
        submit_async(batcher, random_images(2, "uint8"), results, "lone").join(timeout=60)
        assert results["lone"][0].shape == (2, 3)
    finally:
        batcher.close(timeout=10)


class ThreadRecorder(Recorder):
    """A Recorder that also notes which thread ran each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.threads.append(threading.current_thread().name)
        return super().__call__(pixels)


@pytest.mark.parametrize("callers", [1, 2])
def test_a_lone_caller_runs_its_own_forward_with_the_same_plan(callers: int) -> None:
    """Alone (callers() == 1), the forward runs in the caller's thread, padded to the same shapes;
    with another caller being served it goes to the worker (which waits for it no longer than
    ``max_delay_s``). The answers are the same either way."""
    recorder = ThreadRecorder()
    batcher = DynamicBatcher(recorder, 64, 0.01, 1000, shapes=(4, 16), name="worker", callers=lambda: callers)
    images = random_images(3, "uint8", seed=11)
    try:
        features, passes = batcher.submit(images)
    finally:
        batcher.close(timeout=10)
    assert torch.equal(features, expected(images)) and passes == 1
    assert recorder.sizes == [4]  # 3 rows padded to the smallest shape, as the worker pads them
    assert recorder.threads == [threading.current_thread().name if callers == 1 else "worker"]
    assert batcher.images_taken == 3 and batcher.forwards == 1


def test_the_cheapest_plan_splits_where_padding_costs_more_than_a_forward() -> None:
    shapes = (4, 16, 64)
    # per-forward overhead: 64 rows take 6x the time of 4, so 20 rows run as 16 + 4, not as 64
    plans = cheapest_plans(64, shapes, {4: 1.0, 16: 2.0, 64: 6.0})
    assert plans[20] == [16, 4] and plans[3] == [4] and plans[64] == [64] and plans[5] == [16]
    assert all(sum(plan) >= rows and sum(plan[:-1]) < rows for rows, plan in plans.items())  # pad last
    flat = cheapest_plans(64, shapes, {4: 1.0, 16: 4.0, 64: 16.0})  # no overhead: fewest padded rows
    assert flat[20] == [16, 4] and flat[5] == [4, 4] and flat[48] == [16, 16, 16]


def test_a_batcher_with_measured_shapes_runs_the_cheapest_plan(make) -> None:
    batcher, recorder = make(max_batch=64, shapes=(4, 16, 64), shape_seconds={4: 1.0, 16: 2.0, 64: 6.0})
    images = random_images(20, "uint8", seed=2)
    features, passes = batcher.submit(images)
    assert recorder.sizes == [16, 4] and passes == 1 and batcher.plan(20) == [16, 4]
    assert torch.equal(features, expected(images))
