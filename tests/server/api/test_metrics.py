"""``/metrics`` of the real app on the real tiny model: every counter moves by exactly what the traffic
was, a replay is not charged again, refusals count under their codes, no label holds what a client
sent, and each app (several live in one process here) counts only its own traffic."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from server.api.metrics import METRICS_PATH, OTHER_METHOD
from server.api.rejections import UNMATCHED_ROUTE
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, REPLAYED_HEADER, REQUEST_ID_HEADER, Routes, WireTensor
from tests.helpers import KEYS, Scrape, random_images, tiny_argv

KEY = {"Authorization": f"Bearer {KEYS[0]}"}
KEY_ID = key_id_for(hash_api_key(KEYS[0]))  # the charge counters' key_id label
LOSS_POST = {"route": Routes.LOSS, "method": "POST"}


def scrape(api: TestClient) -> Scrape:
    response = api.get(METRICS_PATH)  # no key: the scrape needs none
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value_or_zero(name, **labels)


def post_loss(
    api: TestClient, task_id: str, images: np.ndarray, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = pack(
        {"images": WireTensor.from_numpy(images).model_dump(), "labels": [i % 3 for i in range(len(images))]}
    )
    headers = {**KEY, "Content-Type": MSGPACK_CONTENT_TYPE, **(headers or {})}
    return api.post(Routes.LOSS.format(task_id=task_id), content=body, headers=headers)


def ready(api: TestClient) -> TestClient:
    deadline = time.monotonic() + 120
    while api.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return api


@pytest.fixture(scope="module")
def task_id(api: Any) -> str:
    response = api.post(Routes.TASKS, json={"class_names": ["a", "b", "c"]}, headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def test_a_loss_request_moves_each_counter_by_exactly_its_images(api: Any, task_id: str) -> None:
    shapes = api.get(Routes.INFO, headers=KEY).json()["serving"]["forward_shapes"]
    n = 5
    before = scrape(api)
    assert post_loss(api, task_id, random_images(n, "float32")).status_code == 200
    after = scrape(api)
    assert moved(before, after, "blackvip_images_charged_total", key_id=KEY_ID, endpoint="loss") == n
    assert moved(before, after, "blackvip_charged_requests_total", key_id=KEY_ID, endpoint="loss") == 1
    assert after.value_or_zero("blackvip_images_charged_total", key_id=KEY_ID, endpoint="logits") == 0
    assert moved(before, after, "blackvip_http_requests_total", status="200", **LOSS_POST) == 1
    assert moved(before, after, "blackvip_http_request_duration_seconds_count", **LOSS_POST) == 1
    # A lone request is one batch of its own images, padded up to the forward sizes in use.
    assert moved(before, after, "blackvip_forward_batch_images_count") == 1
    assert moved(before, after, "blackvip_forward_batch_images_sum") == n
    assert moved(before, after, "blackvip_forward_seconds_count") == 1
    plan = api.app.state.blackvip.service.batcher.plan(n)  # the cheapest sizes, measured at start-up
    assert set(plan) <= set(shapes) and sum(plan) >= n
    padding = sum(plan) - n
    assert moved(before, after, "blackvip_forward_padding_images_total") == padding
    assert moved(before, after, "blackvip_ledger_commit_seconds_count") == 1
    assert moved(before, after, "blackvip_ledger_commit_charges_sum") == 1
    assert after.value("blackvip_queue_images") == 0
    assert after.value("blackvip_http_requests_in_progress") == 1  # the scrape itself


def test_a_replay_is_answered_again_but_charged_once(api: Any, task_id: str) -> None:
    images, headers = random_images(3, "uint8", seed=1), {REQUEST_ID_HEADER: "metrics-replay"}
    before = scrape(api)
    first, second = (post_loss(api, task_id, images, headers) for _ in range(2))
    after = scrape(api)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers[REPLAYED_HEADER] == "true" and second.content == first.content
    assert moved(before, after, "blackvip_http_requests_total", status="200", **LOSS_POST) == 2
    assert moved(before, after, "blackvip_images_charged_total", key_id=KEY_ID, endpoint="loss") == 3
    assert moved(before, after, "blackvip_charged_requests_total", key_id=KEY_ID, endpoint="loss") == 1
    assert moved(before, after, "blackvip_forward_batch_images_sum") == 3


def test_each_refusal_counts_once_under_its_code_and_charges_nothing(api: Any, task_id: str) -> None:
    before = scrape(api)
    assert api.get(Routes.INFO).status_code == 401
    assert api.get(Routes.INFO, headers={"Authorization": "Bearer not-a-key"}).status_code == 401
    nan = np.full((2, 3, 32, 32), np.nan, np.float32)
    refused = post_loss(api, task_id, nan)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_values"
    after = scrape(api)
    assert moved(before, after, "blackvip_rejected_requests_total", code="unauthorized") == 2
    assert moved(before, after, "blackvip_rejected_requests_total", code="invalid_values") == 1
    assert moved(before, after, "blackvip_rejected_requests_total", code="quota_exceeded") == 0
    info_401 = {"route": Routes.INFO, "method": "GET", "status": "401"}
    assert moved(before, after, "blackvip_http_requests_total", **info_401) == 2
    assert moved(before, after, "blackvip_http_requests_total", status="422", **LOSS_POST) == 1
    assert moved(before, after, "blackvip_images_charged_total", key_id=KEY_ID, endpoint="loss") == 0
    assert moved(before, after, "blackvip_forward_batch_images_count") == 0


def test_no_label_holds_anything_a_client_sent(api: Any, task_id: str) -> None:
    token = "zq" + secrets.token_hex(8)
    before = scrape(api)
    assert api.get(f"/v1/{token}").status_code == 404
    assert post_loss(api, token, random_images(1, "uint8")).status_code == 404  # an unknown task id
    assert api.request("BREW", Routes.INFO, headers=KEY).status_code == 405
    assert api.get(Routes.INFO, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert api.post(Routes.TASKS, json={"class_names": [token]}, headers=KEY).status_code == 200
    after = scrape(api)
    labels = {value for _, pairs in after.samples for _, value in pairs}
    assert not [value for value in labels if token in value]
    # The routes of the API (documented), and those of its documentation (not documented themselves).
    templates = {*api.get("/openapi.json").json()["paths"], "/openapi.json", "/docs", "/docs/assets/{path}"}
    assert after.label_values("route") <= templates | {UNMATCHED_ROUTE}
    methods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", OTHER_METHOD}
    assert after.label_values("method") <= methods
    assert after.label_values("key_id") <= {key_id_for(hash_api_key(key)) for key in KEYS}  # never the token
    unmatched = {"route": UNMATCHED_ROUTE, "method": "GET", "status": "404"}
    assert moved(before, after, "blackvip_http_requests_total", **unmatched) == 1
    assert moved(before, after, "blackvip_http_requests_total", status="404", **LOSS_POST) == 1
    brewed = {"route": Routes.INFO, "method": OTHER_METHOD, "status": "405"}
    assert moved(before, after, "blackvip_http_requests_total", **brewed) == 1


def test_each_app_counts_its_own_traffic_and_unbatched_forwards(api: Any, tmp_path: Path) -> None:
    flags = ("--no-batcher", "--max-forward-batch", "4", "--quota-images", "6")
    first_app_before = scrape(api)
    with TestClient(create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3", *flags), env={}))) as other:
        ready(other)
        start = scrape(other)
        task = other.post(Routes.TASKS, json={"class_names": ["a", "b", "c"]}).json()["task_id"]
        assert post_loss(other, task, random_images(5, "uint8")).status_code == 200
        over = post_loss(other, task, random_images(5, "uint8"))  # 5 + 5 images > the quota of 6
        assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
        end = scrape(other)
    charged = "blackvip_images_charged_total"
    assert start.value_or_zero(charged, key_id="anonymous", endpoint="loss") == 0  # a registry of its own
    assert end.value(charged, key_id="anonymous", endpoint="loss") == 5
    assert end.value("blackvip_rejected_requests_total", code="quota_exceeded") == 1
    # Without the batcher: forwards of at most 4 images of one request (4 + 1), never padded.
    assert end.value("blackvip_forward_batch_images_count") == 2
    assert end.value("blackvip_forward_batch_images_sum") == 5
    assert end.value("blackvip_forward_padding_images_total") == 0
    first_app_after = scrape(api)
    assert moved(first_app_before, first_app_after, charged, key_id=KEY_ID, endpoint="loss") == 0
    assert first_app_after.value_or_zero(charged, key_id="anonymous", endpoint="loss") == 0


def test_no_metrics_turns_the_route_and_the_counting_off(tmp_path: Path) -> None:
    assert parse_args(tiny_argv(tmp_path / "a.sqlite3"), env={}).metrics is True
    settings = parse_args(tiny_argv(tmp_path / "b.sqlite3"), env={"BLACKVIP_NO_METRICS": "1"})
    assert settings.metrics is False
    assert parse_args(tiny_argv(tmp_path / "c.sqlite3", "--no-metrics"), env={}).metrics is False
    with TestClient(create_app(settings)) as api:
        ready(api)
        response = api.get(METRICS_PATH)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
