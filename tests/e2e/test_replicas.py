"""Three ``blackvip-server`` replicas on one PostgreSQL ledger behind nginx (the compose override's
load balancer, ``docker/nginx/blackvip.conf``), all real processes on loopback: concurrent clients on
several keys, a key whose quota the replicas share, and a ``blackvip train`` job, all through the load
balancer, while one replica is killed with SIGKILL mid-run. Then: the job finished, every key's ledger
total equals exactly what its clients were answered, the shared quota was never crossed, and a request
id retried on another replica was replayed, not recomputed. Its figures are printed (``pytest -s``)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import BlackVIPClient, QuotaExceededError, RetryPolicy
from server.admin import admin_main
from server.ledger import Ledger
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, REPLAYED_HEADER, REQUEST_ID_HEADER, Routes, WireTensor
from tests.engines import Nginx
from tests.helpers import Scrape, ServerProcess, make_image_folder, random_images, tiny_argv

pytestmark = pytest.mark.slow  # about 65 s on 2 cores: 3 replicas, nginx, PostgreSQL, 11 clients

QUOTA = 1500  # images the shared-quota key may spend, on whichever replicas
LOAD_KEYS = 4
CLIENTS_PER_KEY = 2  # 8 load clients, 2 on the shared quota, and the training job: 11 at once
STEPS = 10


def create_key(url: str, label: str, *limits: str) -> str:
    out = io.StringIO()
    assert admin_main(["keys", "create", "--ledger", url, "--label", label, *limits], out=out) == 0
    return out.getvalue().strip()


def key_id(key: str) -> str:
    return key_id_for(hash_api_key(key))


@dataclass
class Tally:
    """What one client was answered: images of successful calls, and when it last got an answer."""

    images: int = 0
    calls: int = 0
    refused: int = 0
    answered_at: list[float] = field(default_factory=list)


class RetryCounter(logging.Handler):
    """Counts the SDK's retries (its warnings), by what caused them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.causes.append(record.getMessage().split(";")[0][:80])


@pytest.fixture
def cluster(postgres, tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess], Nginx, dict[str, str]]]:
    url = postgres.database("replicas")
    keys = {f"load-{i}": create_key(url, f"load-{i}") for i in range(LOAD_KEYS)}
    keys["quota"] = create_key(url, "shared-quota", "--quota-images", str(QUOTA))
    keys["train"] = create_key(url, "train")
    keys["replay"] = create_key(url, "replay")
    replicas = [
        ServerProcess(tiny_argv(url, "--keys-refresh-s", "1"), log_path=tmp_path / f"replica{i}.log")
        for i in range(3)
    ]
    for replica in replicas:
        replica.start()
    balancer = Nginx([f"127.0.0.1:{replica.port}" for replica in replicas]).start()
    try:
        yield url, replicas, balancer, keys
    finally:
        balancer.stop()
        for replica in replicas:
            replica.stop()


def post_logits(base: str, key: str, task_id: str, images: np.ndarray, rid: str) -> httpx.Response:
    body = pack({"images": WireTensor.from_numpy(images).model_dump()})
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": MSGPACK_CONTENT_TYPE,
        REQUEST_ID_HEADER: rid,
    }
    return httpx.post(base + Routes.LOGITS.format(task_id=task_id), content=body, headers=headers, timeout=60)


def forwarded_images(replica: ServerProcess) -> float:
    scrape = Scrape(httpx.get(replica.url + "/metrics", timeout=10).text)
    return scrape.value("blackvip_forward_batch_images_sum")


def check_replay_across_replicas(replicas: list[ServerProcess], key: str) -> None:
    """A task registered on replica 0 is answered by replica 2 (which computes its text features on
    first use); an id answered by replica 0 and retried on replica 2 is replayed there, uncharged."""
    first, other = replicas[0].url, replicas[2].url
    auth = {"Authorization": f"Bearer {key}"}
    task = httpx.post(first + Routes.TASKS, json={"class_names": ["x", "y", "z"]}, headers=auth, timeout=60)
    task_id = task.json()["task_id"]
    images = random_images(5, "uint8", seed=42)
    fresh = post_logits(other, key, task_id, images, "fresh-on-other-replica")
    assert fresh.status_code == 200 and REPLAYED_HEADER not in fresh.headers
    answered = post_logits(first, key, task_id, images, "retried-elsewhere")
    before = forwarded_images(replicas[2])
    retried = post_logits(other, key, task_id, images, "retried-elsewhere")
    assert retried.status_code == 200 and retried.headers.get(REPLAYED_HEADER) == "true"
    assert retried.content == answered.content
    assert forwarded_images(replicas[2]) == before  # replayed from the ledger, no forward


def run_load(base: str, key: str, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with BlackVIPClient(base, key, retry=RetryPolicy(max_attempts=10, base_delay=0.2, max_delay=2.0)) as api:
        task_id = api.register_task(["a", "b", "c", "d"], ["a photo of a {}."]).task_id
        while not stop.is_set() and tally.calls < 2000:
            n = int(rng.integers(1, 9))
            api.logits(task_id, random_images(n, "uint8", seed=int(rng.integers(1 << 30))))
            tally.images += n
            tally.calls += 1
            tally.answered_at.append(time.monotonic())


def run_quota(base: str, key: str, tally: Tally) -> None:
    with BlackVIPClient(base, key, retry=RetryPolicy(max_attempts=10, base_delay=0.2, max_delay=2.0)) as api:
        task_id = api.register_task(["a", "b"], ["{}"]).task_id
        while True:
            try:
                api.logits(task_id, random_images(7, "uint8", seed=tally.calls))
            except QuotaExceededError:
                tally.refused += 1
                return
            tally.images += 7
            tally.calls += 1
            tally.answered_at.append(time.monotonic())


def start_training(base: str, key: str, data: Path, out: Path) -> subprocess.Popen[str]:
    flags = ["--method", "blackvip", "--steps", str(STEPS), "--shots", "8", "--batch-size", "12",
             "--checkpoint-every", "2"]  # fmt: skip
    argv = [sys.executable, "-m", "client.cli", "train", "--url", base, "--data", str(data)]
    argv += ["--out", str(out), *flags]
    env = {**os.environ, "BLACKVIP_API_KEY": key}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def check_the_ledger(
    url: str, keys: dict[str, str], load: dict[str, Tally], quota: list[Tally], summary: dict
) -> int:
    """Every key's ledger totals against what its clients were answered; returns the quota key's use."""
    with closing(Ledger(url)) as ledger:
        for name, tallies in load.items():  # exactly what the key's clients were answered
            assert ledger.images_used(key_id(keys[name])) == sum(tally.images for tally in tallies), name
        used = ledger.images_used(key_id(keys["quota"]))
        assert used == sum(tally.images for tally in quota)
        assert QUOTA - 7 < used <= QUOTA  # never crossed, and each refusal was needed
        assert all(tally.refused == 1 for tally in quota)
        trained = ledger.usage_by_endpoint(key_id(keys["train"]))
        spent = summary["train"]["images"] + summary["eval"]["images"]
        assert sum(e["images"] for e in trained.values()) == spent
        sent = summary["train"]["requests"] + summary["eval"]["requests"]
        assert sum(e["requests"] for e in trained.values()) == sent
        replay = ledger.usage_by_endpoint(key_id(keys["replay"]))
        # the id retried on the other replica was not charged again
        assert replay["logits"]["requests"] == 2 and replay["logits"]["images"] == 10
        totals = ledger.keys.totals()
        assert set(totals) == {key_id(key) for key in keys.values()}  # nothing charged to anyone else
    return used


def start_clients(base: str, keys: dict[str, str], stop: threading.Event) -> tuple[dict, list, list]:
    """The load clients (one key each) and the two clients sharing the quota key, started."""
    load = {f"load-{i}": [Tally() for _ in range(CLIENTS_PER_KEY)] for i in range(LOAD_KEYS)}
    quota = [Tally(), Tally()]
    clients = [(keys[name], tally) for name, tallies in load.items() for tally in tallies]
    threads = [
        threading.Thread(target=run_load, args=(base, key, tally, stop, seed))
        for seed, (key, tally) in enumerate(clients)
    ] + [threading.Thread(target=run_quota, args=(base, keys["quota"], tally)) for tally in quota]
    for thread in threads:
        thread.start()
    return load, quota, threads


def test_replicas_behind_nginx_survive_a_kill_and_charge_exactly_once(cluster, tmp_path: Path) -> None:
    url, replicas, balancer, keys = cluster
    check_replay_across_replicas(replicas, keys["replay"])
    retries = RetryCounter()
    logging.getLogger("client").addHandler(retries)
    stop = threading.Event()
    job = start_training(balancer.url, keys["train"], make_image_folder(tmp_path / "data"), tmp_path / "run")
    load, quota, threads = start_clients(balancer.url, keys, stop)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, 300, "3 steps")
        victim = replicas[1]
        served_before = forwarded_images(victim)
        assert served_before > 0  # it was serving its share when it was killed
        killed_at = time.monotonic()
        victim.kill9()
        stdout, stderr = job.communicate(timeout=600)
    finally:
        stop.set()
        if job.poll() is None:
            job.kill()
        for thread in threads:
            thread.join(timeout=120)
        logging.getLogger("client").removeHandler(retries)
    assert job.returncode == 0, stderr[-3000:]
    assert not any(thread.is_alive() for thread in threads)
    summary = json.loads(stdout)
    assert summary["steps"] == STEPS and summary["stopped_because"] == "steps"

    used = check_the_ledger(url, keys, load, quota, summary)
    tallies = [tally for key_tallies in load.values() for tally in key_tallies]
    after_kill = [min((t for t in tally.answered_at if t > killed_at), default=None) for tally in tallies]
    assert all(t is not None for t in after_kill)  # every client went on after the kill
    gaps = [round(t - killed_at, 2) for t in after_kill]
    survivors = [forwarded_images(replicas[i]) for i in (0, 2)]
    print(
        f"\nreplicas: load clients answered {[t.calls for t in tallies]} calls,"
        f" {[t.images for t in tallies]} images (== ledger per key);"
        f" shared quota {QUOTA}: used {used} in {sum(t.calls for t in quota)} calls, refusals {len(quota)},"
        f" quota calls answered after the kill {sum(t > killed_at for q in quota for t in q.answered_at)};"
        f" training job {summary['train']['images'] + summary['eval']['images']} images in"
        f" {summary['train']['requests'] + summary['eval']['requests']} requests (== ledger);"
        f" victim had forwarded {served_before:.0f} images when killed; survivors {survivors};"
        f" first answer after the kill per load client: {gaps} s;"
        f" SDK retries {len(retries.causes)}: {sorted(set(retries.causes))[:6]}"
    )
