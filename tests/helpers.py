"""Helpers shared by the server and end-to-end tests: settings for the tiny real model, a free
loopback port, a real server subprocess (alone or with keys, and a training job against it), random image
batches, a parsed metrics scrape, and a run's TensorBoard points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from client.local_server import LocalServer as ServerProcess
from client.local_server import free_port

__all__ = [
    "IMAGE_SIZE",
    "KEYS",
    "Scrape",
    "ServerProcess",
    "free_port",
    "keyed_tiny_server",
    "make_image_folder",
    "random_images",
    "read_scalars",
    "tiny_argv",
    "train_with_key",
]

KEYS = ("key-alice", "key-bob")
IMAGE_SIZE = 32  # tiny-vit's input


def tiny_argv(ledger: Path | str, *extra: str) -> list[str]:
    return ["--model", "tiny-vit", "--random-init", "--ledger", str(ledger), "--device", "cpu", *extra]


@contextmanager
def keyed_tiny_server(folder: Path, keys: Iterable[str]) -> Iterator[ServerProcess]:
    """A tiny-vit server subprocess on a free loopback port that accepts ``keys``, its ledger and log in
    ``folder``; stopped on exit."""
    argv = tiny_argv(folder / "ledger.sqlite3", "--api-keys", ",".join(keys))
    process = ServerProcess(argv, log_path=folder / "server.log").start()
    try:
        yield process
    finally:
        process.stop()


def train_with_key(
    server: ServerProcess, data: Path, out: Path, key: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``blackvip train`` (4 shots) on ``data`` into ``out`` against ``server`` under ``key``, as a user runs
    it: a subprocess, the key in ``BLACKVIP_API_KEY``."""
    argv = ["train", "--url", server.url, "--data", str(data), "--out", str(out), "--shots", "4", *args]
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BLACKVIP_API_KEY": key},
    )


def random_images(n: int, dtype: str, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return rng.random((n, 3, size, size)).astype(dtype)


def make_image_folder(
    root: Path,
    classes: int = 3,
    train_per_class: int = 8,
    test_per_class: int = 4,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """A small image-folder dataset: each class a colour, with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(classes, 3))
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                noise = rng.normal(0.0, 40.0, size=(size, size, 3))
                pixels = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


class Scrape:
    """One Prometheus exposition (the server's ``/metrics``), read with prometheus_client's parser."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; a sample that is not there fails (a misspelt name never reads as 0)."""
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name} {labels}"
        return self.samples[key]

    def value_or_zero(self, name: str, **labels: str) -> float:
        """For a series that appears with its first observation (a new route, method and status)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, label: str) -> set[str]:
        return {value for _, labels in self.samples for name, value in labels if name == label}


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar point on disk, per tag in file order. Purging is off: the reader must not
    hide a step written twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


@contextmanager
def served_in_thread(app: Any, **config: Any) -> Iterator[int]:
    """``app`` under a real uvicorn on a free loopback port, in a thread of this process (so a test can
    reach into the app's state or add a route); yields the port once the model has loaded. ``config``:
    more ``uvicorn.Config`` options (``server.api.connections.uvicorn_options``)."""
    import socket
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (server.started and server.servers):
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    while True:  # health is 200 once the model has loaded
        with socket.create_connection(("127.0.0.1", port), timeout=10) as probe:
            probe.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            if b" 200 " in probe.recv(64):
                break
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.1)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
