"""A Prometheus scrape of the real ``blackvip-server`` subprocess while the SDK works against it:
charged images equal the images the SDK's meter counted, a wrong key counts under ``unauthorized``,
and the exposition format follows the scraper's ``Accept``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from client import AuthenticationError, BlackVIPClient
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from tests.helpers import KEYS, Scrape, ServerProcess, random_images, tiny_argv

KEY_ID = key_id_for(hash_api_key(KEYS[0]))  # the charge counters' key_id label


def test_scraped_counters_follow_the_sdk_traffic_exactly(tmp_path: Path) -> None:
    env = {"BLACKVIP_API_KEYS": ",".join(KEYS)}
    server = ServerProcess(tiny_argv(tmp_path / "ledger.sqlite3"), env=env, log_path=tmp_path / "server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url) as scraper:
            before = Scrape(scraper.get("/metrics").text)
            with BlackVIPClient(server.url, KEYS[0]) as client:
                task = client.register_task(["cat", "dog", "bird"])
                client.logits(task.task_id, random_images(4, "uint8"))
                client.loss(task.task_id, random_images(7, "float16"), [0, 1, 2, 0, 1, 2, 0])
                meter = client.meter
            with BlackVIPClient(server.url, "not-a-key") as stranger, pytest.raises(AuthenticationError):
                stranger.info()
            plain = scraper.get("/metrics")
            openmetrics = scraper.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    finally:
        server.stop()
    after = Scrape(plain.text)
    for endpoint in ("tasks", "logits", "loss"):
        counted = meter.by_endpoint[endpoint]
        images = after.value("blackvip_images_charged_total", key_id=KEY_ID, endpoint=endpoint)
        requests = after.value("blackvip_charged_requests_total", key_id=KEY_ID, endpoint=endpoint)
        assert (requests, images) == (counted.requests, counted.images), endpoint
    assert meter.images == 11
    rejected = "blackvip_rejected_requests_total"
    assert after.value(rejected, code="unauthorized") - before.value(rejected, code="unauthorized") == 1
    assert plain.headers["content-type"].startswith("text/plain")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
