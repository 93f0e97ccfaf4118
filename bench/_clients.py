"""Concurrent clients for the serving benchmarks (load.py, serving.py): threads, each with its own
keep-alive connection, looping until one deadline; the msgpack bodies they send; latency percentiles.

Imported by the scripts as ``_clients`` (a script's own folder is first on its path)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np

from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, WireTensor

__all__ = ["DIGIT_TASK", "MSGPACK_HEADERS", "connection", "images_body", "latency_ms", "run_clients"]

DIGIT_TASK = {"class_names": [str(digit) for digit in range(10)]}  # a task's JSON body
MSGPACK_HEADERS = {"Content-Type": MSGPACK_CONTENT_TYPE}
TIMEOUT_S = 120.0  # generous: a 32-client cell on 2 cores queues requests for seconds


def connection(url: str, key: str | None = None) -> httpx.Client:
    """One client's own keep-alive connection (with ``key`` as its bearer token, if given)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S)


def images_body(images: np.ndarray, **fields: Any) -> bytes:
    """A logits (or, with labels and a loss, a loss) request body."""
    return pack({"images": WireTensor.from_numpy(images).model_dump(), **fields})


def run_clients(client_loop: Callable[[int, float], None], clients: int, seconds: float) -> float:
    """``client_loop(index, until)`` in ``clients`` threads at once, ``until`` being ``seconds`` from
    now on the monotonic clock; returns the wall time until the last one returned."""
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, args=(index, until)) for index in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def latency_ms(latencies: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, in milliseconds (NaN when there are none)."""
    ordered = sorted(latencies) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1000, p99 * 1000
