"""A ``blackvip-server`` run as a local subprocess on a free loopback port: for the demo, the
benchmarks and the tests. It is started as a program (``python -m server.main``), never imported, so
the client side still needs no open_clip."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from client._exceptions import BlackVIPError
from shared.protocol import Routes

__all__ = ["LocalServer", "free_port", "local_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """The server process; ``start`` returns once ``/v1/health`` says ok. The port is kept across
    restarts, so a client can outlive a ``kill9`` and a new ``start``."""

    def __init__(
        self,
        argv: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        port: int | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # ``launcher`` prefixes the command, e.g. ("taskset", "-c", "1") to pin the server to a core
        self.argv = [
            *launcher,
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

    def start(self, timeout: float = 180.0) -> LocalServer:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BlackVIPError(f"the server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if httpx.get(self.url + Routes.HEALTH, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BlackVIPError(f"the server was not healthy within {timeout:.0f} s: {self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path and self.log_path.exists() else ""


@contextmanager
def local_server(workdir: Path, *extra: str) -> Iterator[str]:
    """The default server (toy-digits, or as ``extra`` flags say) for the duration of a block; its
    ledger and log live in ``workdir``."""
    server = LocalServer(
        ["--ledger", str(workdir / "ledger.sqlite3"), *extra], log_path=workdir / "server.log"
    )
    with _sigterm_unwinds():
        try:
            server.start()
            yield server.url
        finally:
            server.stop()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) unwinds the caller as Ctrl-C does, so the block's
    server is stopped with it: Python's default ends the process at once and would leave the server running.
    Only where SIGTERM still has its default action and only from the main thread (signals' rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield  # the program handles SIGTERM itself
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
