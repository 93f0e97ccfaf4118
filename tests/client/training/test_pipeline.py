"""Requests in flight: results in input order, never more than ``in_flight`` outstanding, the next
input produced while calls run, errors raised in place; and request boundaries as one flat split."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from client.training.objective import _requests
from client.training.pipeline import ordered_map


def test_results_come_in_input_order_whatever_order_calls_finish_in() -> None:
    def call(item: int) -> int:
        time.sleep(0.02 * (5 - item))  # the first finishes last
        return item * 10

    with ThreadPoolExecutor(4) as pool:
        assert list(ordered_map(call, range(5), 4, pool)) == [0, 10, 20, 30, 40]


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_never_more_than_in_flight_calls_and_inputs_are_built_while_calls_run(in_flight: int) -> None:
    lock, running, peak, overlapped = threading.Lock(), [0], [0], []

    def call(item: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return item

    def items():
        for item in range(8):
            with lock:
                overlapped.append(running[0] > 0)  # is a call outstanding while this input is made?
            yield item

    with ThreadPoolExecutor(in_flight) as pool:
        assert list(ordered_map(call, items(), in_flight, pool if in_flight > 1 else None)) == list(range(8))
    assert peak[0] == in_flight
    assert any(overlapped) == (in_flight > 1)


def test_an_error_is_raised_at_its_place_and_no_call_is_left_running() -> None:
    started, finished = [], []

    def call(item: int) -> int:
        started.append(item)
        time.sleep(0.02)
        if item == 2:
            raise ValueError("bad request 2")
        finished.append(item)
        return item

    seen = []
    with ThreadPoolExecutor(3) as pool:
        with pytest.raises(ValueError, match="bad request 2"):
            for result in ordered_map(call, range(6), 3, pool):
                seen.append(result)
        at_raise = sorted(finished)
        time.sleep(0.1)
    assert seen == [0, 1]
    assert sorted(finished) == at_raise  # nothing finished behind the caller's back
    assert sorted(set(started) - {2}) == at_raise  # every call that started ran to its end first
    assert 5 not in started  # nothing new was sent after the error


@pytest.mark.parametrize(
    ("candidates", "batch", "per_request"), [(10, 12, 40), (4, 7, 7), (3, 5, 100), (6, 4, 3)]
)
def test_requests_have_the_boundaries_of_one_flat_split(
    candidates: int, batch: int, per_request: int
) -> None:
    rows = torch.arange(batch).view(-1, 1, 1, 1)
    images = [torch.full((batch, 3, 2, 2), float(c)) + rows for c in range(candidates)]
    labels = torch.arange(batch) % 3
    flat_images, flat_labels = torch.cat(images), labels.repeat(candidates)
    got = list(_requests(iter(images), labels, per_request))
    starts = range(0, len(flat_images), per_request)
    assert len(got) == len(starts)
    for (chunk, chunk_labels), start in zip(got, starts, strict=True):
        assert torch.equal(chunk, flat_images[start : start + per_request])
        assert torch.equal(chunk_labels, flat_labels[start : start + per_request])
