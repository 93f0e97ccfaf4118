"""The real server process under the failures an operator meets: SIGTERM with a request in flight
(drained, charged, then the ledger closes), a client that vanishes mid-upload (quiet, no 500), and
an open API on a public address (refused at start)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from client import BlackVIPClient, RetryPolicy
from shared.protocol import Routes
from tests.helpers import KEYS, ServerProcess, random_images, tiny_argv


def test_sigterm_drains_the_request_in_flight_then_closes_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    argv = tiny_argv(ledger, "--forward-batch", "1", "--max-batch-images", "4096", "--shutdown-grace-s", "60")
    argv.append("--access-log")  # its line for the answer shows the answer went out before shutdown
    server = ServerProcess(argv, env={"BLACKVIP_API_KEYS": KEYS[0]}, log_path=tmp_path / "server.log").start()
    outcome: dict[str, object] = {}
    with BlackVIPClient(server.url, KEYS[0], retry=RetryPolicy.none()) as client:
        task_id = client.register_task(["a", "b"]).task_id
        images = random_images(3000, "uint8")  # one image per forward: a few seconds of work

        def slow_call() -> None:
            started = time.monotonic()
            outcome["logits"] = client.logits(task_id, images)
            outcome["seconds"] = time.monotonic() - started

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(1.0)  # the request is being answered
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=120)
    # uvicorn re-raises SIGTERM after a clean shutdown, so the exit status is the signal's
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.log_tail()
    assert outcome["logits"].shape == (3000, 2), server.log_tail()  # answered, not cut off
    with sqlite3.connect(ledger) as db:
        charged = db.execute(
            "SELECT COALESCE(SUM(images), 0) FROM queries WHERE endpoint = 'logits'"
        ).fetchone()
    assert charged[0] == 3000
    log = server.log_tail()
    assert "Application shutdown complete" in log and "Traceback" not in log
    assert log.index('logits HTTP/1.1" 200') < log.index("Waiting for application shutdown")


def test_a_client_vanishing_mid_upload_is_quiet_and_charged_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tiny_argv(tmp_path / "l.sqlite3"), log_path=tmp_path / "server.log").start()
    try:
        task = httpx.post(server.url + Routes.TASKS, json={"class_names": ["a", "b"]}).json()["task_id"]
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                head = (
                    f"POST {Routes.LOGITS.format(task_id=task)} HTTP/1.1\r\nHost: x\r\n"
                    "Content-Type: application/msgpack\r\nContent-Length: 1000000\r\n\r\n"
                )
                sock.sendall(head.encode() + b"\x00" * 4000)
            time.sleep(0.3)
        health = httpx.get(server.url + Routes.HEALTH)
        assert health.status_code == 200
        usage = httpx.get(server.url + Routes.USAGE).json()
        assert usage["total"]["images"] == 0
        log = server.log_tail()
        assert "Traceback" not in log and " 500" not in log, log
        assert "client disconnected" in log
    finally:
        server.stop()


def test_an_open_api_on_a_public_address_does_not_start(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "server.main", "--host", "0.0.0.0", *tiny_argv(tmp_path / "l.sqlite3")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "--allow-open" in result.stderr and "no API keys" in result.stderr


def test_a_ledger_written_by_newer_code_stops_the_server_with_status_1(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(ledger) as db:
        db.execute("PRAGMA user_version = 99")
    argv = [sys.executable, "-m", "server.main", "--port", "0", *tiny_argv(ledger)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "schema version 99" in result.stderr and "newer blackvip-server" in result.stderr
