"""Keys managed with ``blackvip-server keys ...`` (a subprocess on the ledger file) against a running
``blackvip-server`` (another subprocess) on loopback, driven by the SDK: a key works within seconds of
its creation, a new quota is enforced at once, a revoked key is refused within seconds; per-key quotas
hold exactly under concurrent requests; the SDK waits out a low rate limit and nothing refused is
charged; exports, ``/v1/usage`` and ``blackvip usage --by hour`` agree with the client's meter."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from client import BlackVIPClient, QuotaExceededError, RetryPolicy
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, REQUEST_ID_HEADER, Routes, WireTensor
from tests.helpers import KEYS, ServerProcess, random_images, tiny_argv

CLASSES = ["cat", "dog", "bird"]
REFRESH_S = 0.5


@dataclass
class Service:
    url: str
    ledger: Path

    def admin(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "server.main", *argv, "--ledger", str(self.ledger)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    def create_key(self, label: str, *limits: str) -> tuple[str, str]:
        """A new key and its id, made by the admin command."""
        record = json.loads(self.admin("keys", "create", "--label", label, "--json", *limits).stdout)
        return record["key"], record["key_id"]

    def status_with(self, key: str) -> int:
        return httpx.get(self.url + Routes.INFO, headers={"Authorization": f"Bearer {key}"}).status_code


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("keys")
    ledger = workdir / "ledger.sqlite3"
    argv = tiny_argv(
        ledger, "--keys-refresh-s", str(REFRESH_S), "--rejection-flush-s", "0.2", "--price-per-1k-images", "2"
    )
    server = ServerProcess(argv, env={"BLACKVIP_API_KEYS": KEYS[0]}, log_path=workdir / "server.log").start()
    try:
        yield Service(server.url, ledger)
    finally:
        server.stop()


def wait_for_status(service: Service, key: str, status: int, within_s: float = 15.0) -> float:
    """Seconds until a request with ``key`` is answered ``status``."""
    start = time.monotonic()
    while service.status_with(key) != status:
        assert time.monotonic() - start < within_s, f"still not {status} after {within_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_keys_life_through_the_admin_commands(service: Service) -> None:
    key, key_id = service.create_key("lifecycle")
    seen_after = wait_for_status(service, key, 200)
    with BlackVIPClient(service.url, key) as client:
        task_id = client.register_task(CLASSES).task_id
        client.logits(task_id, random_images(6, "uint8"))
        service.admin("keys", "set-quota", key_id, "--quota-images", "10")
        with pytest.raises(QuotaExceededError, match="6 of 10 used"):  # enforced at once: the charge reads it
            client.logits(task_id, random_images(5, "uint8"))
        client.logits(task_id, random_images(4, "uint8"))
        usage = client.usage()
        assert usage.key_id == key_id and usage.total.images == client.meter.images == 10
        assert usage.quota is not None and (usage.quota.images, usage.quota.images_left) == (10, 0)
    listed = {row["key_id"]: row for row in json.loads(service.admin("keys", "list", "--json").stdout)}
    assert (listed[key_id]["label"], listed[key_id]["images"], listed[key_id]["quota_images"]) == (
        "lifecycle", 10, 10
    )  # fmt: skip
    service.admin("keys", "revoke", key_id)
    refused_after = wait_for_status(service, key, 401)
    print(f"\nkey seen {seen_after:.2f} s after create, refused {refused_after:.2f} s after revoke "
          f"(--keys-refresh-s {REFRESH_S})")  # fmt: skip
    assert service.status_with(KEYS[0]) == 200  # a key from --api-keys keeps working beside them


def test_a_keys_quota_is_never_crossed_by_concurrent_requests(service: Service) -> None:
    key, _ = service.create_key("concurrent", "--quota-images", "100")
    wait_for_status(service, key, 200)
    with BlackVIPClient(service.url, key) as client:
        task_id = client.register_task(CLASSES).task_id
    sizes = [(7 * i) % 11 + 1 for i in range(48)]  # 1..11 images, 292 in all: far over the quota

    def send(size: int) -> int:
        with BlackVIPClient(service.url, key) as client:
            try:
                client.logits(task_id, random_images(size, "uint8", seed=size))
            except QuotaExceededError:
                return -size
        return size

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(send, sizes))
    answered = sum(size for size in outcomes if size > 0)
    refused = [-size for size in outcomes if size < 0]
    with BlackVIPClient(service.url, key) as client:
        used = client.usage().total.images
    assert used == answered <= 100 and refused
    assert all(used + size > 100 for size in refused)  # no refusal of a request that would still fit


def test_the_sdk_waits_out_a_low_rate_and_nothing_refused_is_charged(service: Service) -> None:
    key, key_id = service.create_key("slow", "--rate", "30/min")  # one request every 2 s, burst 1
    wait_for_status(service, key, 200)  # takes the one token
    retry = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=1.0)
    with BlackVIPClient(service.url, key, retry=retry) as client:
        task_id = client.register_task(CLASSES).task_id  # each call waits the server's Retry-After
        for seed in range(3):
            client.loss(task_id, random_images(4, "uint8", seed=seed), [0, 1, 2, 0])
        usage = client.usage()
    assert usage.quota is not None and usage.quota.rate_per_s == 0.5
    assert usage.rejected_by_status.get("429", 0) >= 4  # the SDK was refused and waited, 5 calls
    charged = (usage.total.requests, usage.total.images)
    assert charged == (client.meter.requests, client.meter.images) == (4, 12)
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}) as raw:
        refused = raw.get(Routes.USAGE)  # sent at once after the last call: no token yet
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) in (1, 2)
    rows = service.admin("ledger", "export", "--format", "jsonl", "--key", key_id).stdout.splitlines()
    assert len(rows) == 4  # the refused attempts left no row


def test_export_usage_and_the_meter_agree(service: Service, tmp_path: Path) -> None:
    key, key_id = service.create_key("accounting")
    wait_for_status(service, key, 200)
    with BlackVIPClient(service.url, key) as client:
        task_id = client.register_task(CLASSES, ["a photo of a {}.", "a {}"]).task_id
        for seed, dtype in enumerate(["float32", "float16", "uint8"]):
            client.logits(task_id, random_images(3 + seed, dtype, seed=seed))
            client.loss(task_id, random_images(5, dtype, seed=seed), [0, 1, 2, 0, 1], loss="focal")
        usage = client.usage()
        meter = client.meter
    exported = list(csv.DictReader(io.StringIO(service.admin("ledger", "export", "--key", key_id).stdout)))
    for endpoint, counted in meter.by_endpoint.items():
        rows = [row for row in exported if row["endpoint"] == endpoint]
        served = usage.by_endpoint[endpoint]
        assert len(rows) == served.requests == counted.requests
        assert sum(int(row["images"]) for row in rows) == served.images == counted.images
        assert sum(float(row["cost"]) for row in rows) == pytest.approx(served.cost, rel=1e-12)
        assert sum(int(row["bytes"]) for row in rows) == served.bytes == counted.bytes
    texts = len(CLASSES) * 2  # the registration's class x template texts, at the default 1.0 per 1,000
    assert usage.total.texts == texts and usage.price_per_1k_texts == 1.0
    assert usage.total.cost == pytest.approx(meter.images * 2 / 1000 + texts * 1.0 / 1000)
    assert sum(int(row["texts"]) for row in exported) == texts
    table = usage_cli(service, key, "--by", "hour")
    assert table.returncode == 0, table.stderr
    print("\n" + table.stdout)
    total = table.stdout.splitlines()[-1].split()
    assert total[0] == "total"
    assert (int(total[1]), int(total[2])) == (usage.total.requests, usage.total.images)
    assert float(total[3]) == pytest.approx(usage.total.cost, rel=1e-5)
    days = json.loads(usage_cli(service, key, "--by", "day", "--json").stdout)
    assert days["key_id"] == key_id and days["by"] == "day"
    assert sum(p["images"] for p in days["periods"]) == usage.total.images
    assert sum(p["cost"] for p in days["periods"]) == pytest.approx(usage.total.cost, rel=1e-12)
    stray = usage_cli(service, key, "--since", "2025-01-01")
    assert stray.returncode != 0 and "--since and --until go with --by" in stray.stderr


def usage_cli(service: Service, key: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "usage", *argv, "--url", service.url],
        env={**os.environ, "BLACKVIP_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_revoked_key_cannot_replay_what_it_was_answered(service: Service) -> None:
    key, key_id = service.create_key("revoked-replay")
    wait_for_status(service, key, 200)
    with BlackVIPClient(service.url, key) as client:
        task_id = client.register_task(CLASSES).task_id
    body = pack({"images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump()})
    sent = {"Content-Type": MSGPACK_CONTENT_TYPE, REQUEST_ID_HEADER: "replay-me"}
    path = service.url + Routes.LOGITS.format(task_id=task_id)
    first = httpx.post(path, content=body, headers={**sent, "Authorization": f"Bearer {key}"})
    assert first.status_code == 200
    service.admin("keys", "revoke", key_id)
    wait_for_status(service, key, 401)
    replay = httpx.post(path, content=body, headers={**sent, "Authorization": f"Bearer {key}"})
    assert replay.status_code == 401 and "revoked" in replay.json()["error"]["message"]
    borrowed = httpx.post(path, content=body, headers={**sent, "Authorization": f"Bearer {key_id}"})
    assert borrowed.status_code == 401  # the key's public id is no credential
    rows = service.admin("ledger", "export", "--format", "jsonl", "--key", key_id).stdout.splitlines()
    charged = [(json.loads(row)["endpoint"], json.loads(row)["request_id"]) for row in rows]
    assert charged[1:] == [("logits", "replay-me")]  # after the task's registration: one charge, once


def test_a_job_stopped_by_its_quota_keeps_a_checkpoint_and_resumes_after_set_quota(
    service: Service, tmp_path: Path
) -> None:
    from client.training.rundir import RunDir
    from digits.tasks import write_task_folder

    data = write_task_folder("loc-digits-1x1", tmp_path / "data")
    # 1 task registration + 2 steps of 10 x 12 images fit in 250 images; the third step does not
    key, key_id = service.create_key("quota-job", "--quota-images", "250")
    argv = [sys.executable, "-m", "client.cli", "train", "--url", service.url, "--data", str(data)]
    argv += ["--out", str(tmp_path / "run"), "--batch-size", "12", "--shots", "4", "--steps", "4"]
    argv += ["--checkpoint-every", "100", "--eval-splits", "val"]
    env = {**os.environ, "BLACKVIP_API_KEY": key}
    stopped = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "refused step 3" in stopped.stderr and "keys set-quota" in stopped.stderr
    saved = RunDir(tmp_path / "run").load_checkpoint()
    assert saved is not None and saved["step"] == 2
    with BlackVIPClient(service.url, key) as api:
        assert api.usage().total.images == sum(count["images"] for count in saved["train_meter"].values())
    service.admin("keys", "set-quota", key_id, "--quota-images", "none")
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["steps"] == 4
