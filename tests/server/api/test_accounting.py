"""What the ledger counts besides images: cost at a price other than the default, batch passes under
``--forward-batch``, texts encoded once per task and priced; and what the server says about itself in its
log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, Routes, UsageResponse, WireTensor
from tests.helpers import random_images, tiny_argv


def ready(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 60
    while client.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return client


def send_logits(client: TestClient, task_id: str, n: int) -> None:
    body = pack({"images": WireTensor.from_numpy(random_images(n, "uint8")).model_dump()})
    response = client.post(
        Routes.LOGITS.format(task_id=task_id), content=body, headers={"Content-Type": MSGPACK_CONTENT_TYPE}
    )
    assert response.status_code == 200, response.text


def test_price_forward_batch_and_texts_are_counted_as_configured(tmp_path: Path) -> None:
    flags = ("--price-per-1k-images", "2.5", "--price-per-1k-texts", "0.5", "--forward-batch", "3")
    with TestClient(create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3", *flags), env={}))) as api:
        ready(api)
        task = {"class_names": ["a", "b", "c"], "templates": ["{}", "a {}"]}
        task_id = api.post(Routes.TASKS, json=task).json()["task_id"]
        api.post(Routes.TASKS, json=task)  # registered again: texts are not encoded again
        send_logits(api, task_id, 8)  # ceil(8 / 3) = 3 forward passes
        send_logits(api, task_id, 3)  # 1 pass
        usage = UsageResponse.model_validate(api.get(Routes.USAGE).json())
        info = api.get(Routes.INFO).json()
        assert (info["price_per_1k_images"], info["price_per_1k_texts"]) == (2.5, 0.5)
    logits, tasks = usage.by_endpoint["logits"], usage.by_endpoint["tasks"]
    assert (logits.requests, logits.images, logits.batch_passes) == (2, 11, 4)
    assert logits.cost == pytest.approx(11 * 2.5 / 1000)
    assert (tasks.requests, tasks.texts) == (2, 6)
    assert tasks.cost == pytest.approx(6 * 0.5 / 1000)  # the first registration's texts, once
    assert usage.total.cost == pytest.approx(0.0275 + 0.003)
    assert (usage.price_per_1k_images, usage.price_per_1k_texts) == (2.5, 0.5)


def test_random_init_and_an_open_api_are_logged_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3"), env={}))) as api:
        ready(api)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("--random-init: serving UNTRAINED tiny-vit weights" in message for message in warnings)
    assert sum(message == "=" * 72 for message in warnings) >= 2  # the banner around it
    assert any("no API keys configured: the API is open" in message for message in warnings)
