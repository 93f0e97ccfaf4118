"""The real ``blackvip-server`` as a subprocess on loopback, driven by the SDK: all three dtypes,
client meter against server usage, and a ``kill -9`` that must lose no count."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import AuthenticationError, BlackVIPClient, InvalidInputError, RetryPolicy, TransportError
from tests.helpers import KEYS, ServerProcess, random_images, tiny_argv

CLASSES = ["cat", "dog", "bird"]


def run_mixed_workload(client: BlackVIPClient) -> str:
    task = client.register_task(CLASSES, ["a photo of a {}.", "a {}"])
    for seed, dtype in enumerate(["float32", "float16", "uint8"]):
        images = random_images(6, dtype, seed=seed)
        logits = client.logits(task.task_id, images)
        assert logits.shape == (6, 3) and logits.dtype == np.float32
        result = client.loss(task.task_id, images, [0, 1, 2, 0, 1, 2], loss="focal" if seed else "ce")
        assert result.losses.shape == (6,) and np.isfinite(result.losses).all()
        assert result.correct.tolist() == (logits.argmax(1) == [0, 1, 2, 0, 1, 2]).tolist()
    return task.task_id


def assert_meter_equals_usage(client: BlackVIPClient) -> None:
    usage = client.usage()
    assert usage.total.requests == client.meter.requests
    assert usage.total.images == client.meter.images
    assert usage.total.bytes == client.meter.bytes
    for endpoint, count in client.meter.by_endpoint.items():
        served = usage.by_endpoint[endpoint]
        assert (served.requests, served.images, served.bytes) == (count.requests, count.images, count.bytes)


def test_sdk_against_real_server_then_kill_9_and_restart(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    argv = tiny_argv(ledger, "--rejection-flush-s", "0.2")
    env = {"BLACKVIP_API_KEYS": ",".join(KEYS)}
    server = ServerProcess(argv, env=env, log_path=tmp_path / "server.log").start()
    try:
        with BlackVIPClient(server.url, KEYS[0]) as client:
            assert client.info().image_size == 32
            task_id = run_mixed_workload(client)
            with pytest.raises(InvalidInputError, match="NaN"):  # rejected, not charged
                client.logits(task_id, np.full((2, 3, 32, 32), np.nan, np.float32))
            assert_meter_equals_usage(client)
            before = client.usage()
            assert before.total.images == 36 and before.rejected_requests == 1
        with BlackVIPClient(server.url, "wrong-key") as stranger, pytest.raises(AuthenticationError):
            stranger.usage()
        # Charges are durable at once; rejection counters are flushed every --rejection-flush-s,
        # so after a flush period a kill -9 loses none of them either.
        time.sleep(1.0)
    finally:
        server.kill9()

    restarted = ServerProcess(argv, env=env, log_path=tmp_path / "server.log").start()
    try:
        with BlackVIPClient(restarted.url, KEYS[0]) as client:
            after = client.usage()
            assert after == before
            logits = client.logits(task_id, random_images(2, "uint8"))  # tasks survive a restart
            assert logits.shape == (2, 3)
            assert client.usage().total.images == before.total.images + 2
    finally:
        restarted.stop()


def test_client_retries_until_a_late_server_comes_up(tmp_path: Path) -> None:
    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log")
    # Nobody listens yet: connection refused, retried with backoff, then a clear TransportError.
    with BlackVIPClient(server.url, retry=RetryPolicy(max_attempts=3, base_delay=0.05)) as client:
        with pytest.raises(TransportError, match="ConnectError"):
            client.usage()
    # Now a call starts before the server does and its retries span the start: refused connections,
    # then 503 "loading" while the model loads, then the answer.
    healths: list[tuple[int, str]] = []

    def start_later() -> None:
        time.sleep(1.0)
        assert server.proc is None
        server.proc = subprocess.Popen(
            server.argv, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not healths or healths[-1][0] != 200):
            try:
                response = httpx.get(server.url + "/v1/health", timeout=1.0)
                healths.append((response.status_code, response.json()["status"]))
            except httpx.TransportError:
                pass
            time.sleep(0.02)

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with BlackVIPClient(
            server.url, retry=RetryPolicy(max_attempts=12, base_delay=0.2, max_delay=4.0)
        ) as client:
            task = client.register_task(CLASSES)  # sent before the server exists
            assert task.num_classes == 3 and client.meter.requests == 1
        starter.join()
        assert (503, "loading") in healths and healths[-1] == (200, "ok")
    finally:
        starter.join()
        server.stop()


@pytest.mark.parametrize(
    ("argv", "env", "message", "status"),
    [
        (["--model", "tiny-vit", "--checkpoint", "/no/such/weights.pt"], {}, "does not exist", 1),
        (["--model", "ViT-B-32", "--pretrained", "openai"], {"HF_HUB_OFFLINE": "1"}, "--checkpoint PATH", 1),
        (["--model", "tiny-vit"], {}, "exactly one weights source", 2),
    ],
)
def test_server_that_cannot_load_exits_with_a_clear_error(tmp_path, argv, env, message, status) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server.main", "--port", "0", "--ledger", str(tmp_path / "l.sqlite3"), *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status  # docs/server.md: 1 when the model cannot load, 2 for bad settings
    assert message in done.stderr


def test_concurrent_clients_lose_no_count(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log").start()
    try:
        with BlackVIPClient(server.url) as client:
            task_id = client.register_task(CLASSES).task_id

            def work(seed: int) -> np.ndarray:
                images = random_images(8, "uint8", seed=seed)
                return client.logits(task_id, images)

            with ThreadPoolExecutor(max_workers=4) as pool:
                results = list(pool.map(work, range(20)))
            # One model call at a time: concurrent answers equal the same batch sent alone.
            np.testing.assert_allclose(results[3], work(3), rtol=1e-5, atol=1e-5)
            assert_meter_equals_usage(client)
            assert client.usage().total.images == 21 * 8
    finally:
        server.stop()


def test_kill_9_with_requests_in_flight_loses_no_count_and_charges_nothing_twice(tmp_path: Path) -> None:
    """Four clients keep calling while the server is killed mid-request and restarted on the same port
    and ledger; their retries (one request id per call) replay what was already charged."""
    from concurrent.futures import ThreadPoolExecutor

    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), log_path=tmp_path / "server.log").start()
    retry = RetryPolicy(max_attempts=40, base_delay=0.1, max_delay=1.0)
    try:
        with BlackVIPClient(server.url, retry=retry) as client:
            task_id = client.register_task(CLASSES).task_id

            def work(seed: int) -> np.ndarray:
                return client.loss(task_id, random_images(16, "uint8", seed=seed), [0, 1, 2, 0] * 4).losses

            with ThreadPoolExecutor(max_workers=4) as pool:
                futures = [pool.submit(work, seed) for seed in range(120)]
                time.sleep(1.0)
                server.kill9()  # the four workers have requests in flight
                server.start()
                losses = [future.result() for future in futures]
            assert len(losses) == 120 and client.meter.images == 120 * 16
            assert_meter_equals_usage(client)
            np.testing.assert_allclose(losses[7], work(7), rtol=1e-5)  # answers are the model's
    finally:
        server.stop()
