"""Load: many concurrent clients of mixed traffic against one real server, then the ledger checked
against what the clients were answered.

    python bench/load.py                         # 32 clients, 60 s, toy-digits (~1.5 min)
    python bench/load.py --clients 8 --seconds 10

Each client holds its own key (round robin over 4), registers a task, then loops: logits or loss
(CE or focal) on 1-16 images, sometimes sends the same request twice under one request id (a retry:
the second must be a replay, not a charge), sometimes re-registers its task, sometimes reads usage.
Prints requests, images, replays, errors, latency p50/p99 and whether every key's ledger usage equals
exactly the charged answers its clients received.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from _clients import DIGIT_TASK, MSGPACK_HEADERS, connection, images_body, latency_ms, run_clients

from client.local_server import LocalServer
from shared.protocol import REPLAYED_HEADER, REQUEST_ID_HEADER, Routes

KEYS = [f"load-key-{index}" for index in range(4)]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    requests: Counter = field(default_factory=Counter)  # (key, endpoint) charged answers
    images: Counter = field(default_factory=Counter)  # key -> charged images
    replays: int = 0
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--url", help="an already running server started with --api-keys " + ",".join(KEYS))
    parser.add_argument("--workdir", type=Path, default=None)
    return parser.parse_args(argv)


def client_loop(url: str, key: str, seed: int, until: float, tally: Tally) -> None:
    rng = np.random.default_rng(seed)
    with connection(url, key) as http:
        task_id = timed(http, tally, key, "tasks", "POST", Routes.TASKS, json=DIGIT_TASK).json()["task_id"]
        size = http.get(Routes.INFO).json()["image_size"]
        while time.monotonic() < until:
            roll = rng.random()
            if roll < 0.05:
                timed(http, tally, key, None, "GET", Routes.USAGE)
                continue
            if roll < 0.08:
                timed(http, tally, key, "tasks", "POST", Routes.TASKS, json=DIGIT_TASK)
                continue
            n = int(rng.integers(1, 17))
            images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
            endpoint = "logits" if roll < 0.5 else "loss"
            fields: dict[str, object] = {}
            if endpoint == "loss":
                fields = {"labels": rng.integers(0, 10, n).tolist(), "loss": "focal" if roll > 0.9 else "ce"}
            path = (Routes.LOGITS if endpoint == "logits" else Routes.LOSS).format(task_id=task_id)
            headers = {**MSGPACK_HEADERS, REQUEST_ID_HEADER: uuid.uuid4().hex}
            body = images_body(images, **fields)
            for _ in range(2 if rng.random() < 0.1 else 1):  # a retry of the same request
                timed(http, tally, key, endpoint, "POST", path, content=body, headers=headers, images=n)


def timed(http: httpx.Client, tally: Tally, key: str, endpoint: str | None, method: str, path: str,
          images: int = 0, **kwargs) -> httpx.Response:  # fmt: skip
    start = time.perf_counter()
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        with tally.lock:
            tally.errors[type(exc).__name__] += 1
        raise
    elapsed = time.perf_counter() - start
    with tally.lock:
        tally.latencies.append(elapsed)
        if response.status_code != 200:
            tally.errors[str(response.status_code)] += 1
        elif response.headers.get(REPLAYED_HEADER) == "true":
            tally.replays += 1
        elif endpoint is not None:
            tally.requests[(key, endpoint)] += 1
            tally.images[key] += images
    return response


def check_ledger(url: str, tally: Tally) -> list[str]:
    """Every key's usage minus what the clients were answered; empty when they agree exactly."""
    problems = []
    for key in KEYS:
        usage = httpx.get(url + Routes.USAGE, headers={"Authorization": f"Bearer {key}"}).json()
        if usage["total"]["images"] != tally.images[key]:
            problems.append(
                f"{key}: ledger images {usage['total']['images']} != answered {tally.images[key]}"
            )
        for endpoint in ("tasks", "logits", "loss"):
            charged = usage["by_endpoint"].get(endpoint, {"requests": 0})["requests"]
            if charged != tally.requests[(key, endpoint)]:
                problems.append(
                    f"{key}/{endpoint}: ledger {charged} != answered {tally.requests[(key, endpoint)]}"
                )
    return problems


def run(args: argparse.Namespace, url: str) -> int:
    tally = Tally()
    elapsed = run_clients(
        lambda i, until: client_loop(url, KEYS[i % len(KEYS)], i, until, tally), args.clients, args.seconds
    )
    problems = check_ledger(url, tally)
    p50, p99 = latency_ms(tally.latencies)
    charged, images = sum(tally.requests.values()), sum(tally.images.values())
    print(
        "| clients | seconds | requests | charged | replays | images | images/s | p50 ms | p99 ms | errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {args.clients} | {elapsed:.1f} | {len(tally.latencies)} | {charged} | {tally.replays} | "
        f"{images} | {images / elapsed:.0f} | {p50:.1f} | {p99:.1f} | "
        f"{dict(tally.errors) or 0} |"
    )
    print("charged == answered, per key and endpoint:", "yes" if not problems else "NO")
    for problem in problems:
        print("  " + problem)
    return 0 if not problems and not tally.errors else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        return run(args, args.url)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        server = LocalServer(
            ["--ledger", str(workdir / "ledger.sqlite3"), "--api-keys", ",".join(KEYS)],
            log_path=workdir / "server.log",
        ).start()
        try:
            return run(args, server.url)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
