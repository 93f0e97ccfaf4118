"""Helpers shared by the server and end-to-end tests: settings for the tiny real model, a free
loopback port, a real server subprocess, and random image batches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from shared.protocol import Routes

KEYS = ("key-alice", "key-bob")
IMAGE_SIZE = 32  # tiny-vit's input


def tiny_argv(ledger: Path, *extra: str) -> list[str]:
    return ["--model", "tiny-vit", "--random-init", "--ledger", str(ledger), "--device", "cpu", *extra]


def random_images(n: int, dtype: str, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return rng.random((n, 3, size, size)).astype(dtype)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The real ``blackvip-server`` as a subprocess on a free loopback port."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable,
            "-m",
            "server.main",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *argv,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + Routes.HEALTH, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not healthy after {timeout} s: {self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path and self.log_path.exists() else ""


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
