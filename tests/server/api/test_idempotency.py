"""Request ids as idempotency keys, tried as an attacker would: replays, other bodies, other keys'
ids, concurrent duplicates, expiry and the answer store's cap. Every answered image is charged once.
Each test runs on both ledger engines (a SQLite file, a PostgreSQL database: ``ledger_target``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from shared.codec import pack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    ErrorBody,
    Routes,
    UsageResponse,
    WireTensor,
)
from tests.helpers import KEYS, random_images, tiny_argv

ALICE = {"Authorization": f"Bearer {KEYS[0]}"}
BOB = {"Authorization": f"Bearer {KEYS[1]}"}


def start(target: Path | str, *flags: str) -> TestClient:
    settings = parse_args(tiny_argv(target, *flags), env={"BLACKVIP_API_KEYS": ",".join(KEYS)})
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return client


@pytest.fixture
def api(ledger_target: Path | str) -> Iterator[TestClient]:
    client = start(ledger_target, "--quota-images", "40")
    yield client
    client.__exit__(None, None, None)


def task(api: TestClient, headers: dict[str, str] = ALICE) -> str:
    return api.post(Routes.TASKS, json={"class_names": ["a", "b", "c"]}, headers=headers).json()["task_id"]


def logits(api: TestClient, task_id: str, rid: str | None, seed: int = 0, n: int = 4, headers=ALICE):
    body = pack({"images": WireTensor.from_numpy(random_images(n, "uint8", seed=seed)).model_dump()})
    extra = {REQUEST_ID_HEADER: rid} if rid else {}
    return api.post(
        Routes.LOGITS.format(task_id=task_id),
        content=body,
        headers={**headers, **extra, "Content-Type": MSGPACK_CONTENT_TYPE},
    )


def images_charged(api: TestClient, headers: dict[str, str] = ALICE) -> int:
    return UsageResponse.model_validate(api.get(Routes.USAGE, headers=headers).json()).total.images


def code(response) -> tuple[int, str]:
    return response.status_code, ErrorBody.model_validate(response.json()).error.code.value


def backend(api: TestClient):
    return api.app.state.blackvip.service.backend


def test_same_id_same_body_replays_without_a_model_call_or_a_charge(api: TestClient) -> None:
    task_id = task(api)
    first = logits(api, task_id, "r-1")
    calls = backend(api).image_calls
    again = [logits(api, task_id, "r-1") for _ in range(5)]
    assert first.status_code == 200 and REPLAYED_HEADER not in first.headers
    assert all(r.status_code == 200 and r.content == first.content for r in again)
    assert all(r.headers[REPLAYED_HEADER] == "true" for r in again)
    assert backend(api).image_calls == calls  # no forward ran for the replays
    assert images_charged(api) == 4


def test_same_id_other_body_is_refused_whole(api: TestClient) -> None:
    task_id = task(api)
    assert logits(api, task_id, "r-2", seed=0).status_code == 200
    calls = backend(api).image_calls
    for response in (
        logits(api, task_id, "r-2", seed=1),  # other images
        logits(api, task_id, "r-2", n=2),  # fewer images
        api.post(
            Routes.LOSS.format(task_id=task_id),  # another route
            content=pack(
                {
                    "images": WireTensor.from_numpy(random_images(4, "uint8")).model_dump(),
                    "labels": [0, 1, 2, 0],
                }
            ),
            headers={**ALICE, REQUEST_ID_HEADER: "r-2", "Content-Type": MSGPACK_CONTENT_TYPE},
        ),
    ):
        assert code(response) == (422, "idempotency_mismatch")
    assert backend(api).image_calls == calls  # refused before any model call
    assert images_charged(api) == 4


def test_another_keys_id_is_simply_another_id(api: TestClient) -> None:
    alice_task, bob_task = task(api), task(api, BOB)
    assert logits(api, alice_task, "shared-id").status_code == 200
    bob = logits(api, bob_task, "shared-id", seed=5, headers=BOB)
    assert bob.status_code == 200 and REPLAYED_HEADER not in bob.headers
    assert images_charged(api) == 4 and images_charged(api, BOB) == 4


def test_one_id_on_every_request_gets_one_answer_not_free_forwards(api: TestClient) -> None:
    task_id = task(api)
    answered = [logits(api, task_id, "reused", seed=seed) for seed in range(10)]
    assert answered[0].status_code == 200
    assert all(code(r) == (422, "idempotency_mismatch") for r in answered[1:])
    assert images_charged(api) == 4


def test_a_duplicate_while_the_first_runs_is_409(api: TestClient) -> None:
    task_id = task(api)
    results: list = []
    with backend(api).gate.image():  # the first request holds its claim while it waits for the model
        first = threading.Thread(target=lambda: results.append(logits(api, task_id, "slow")))
        first.start()
        deadline = time.monotonic() + 10
        while not api.app.state.blackvip.service.idempotency.claimed:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        duplicate = logits(api, task_id, "slow")
        assert code(duplicate) == (409, "request_in_progress")
        assert duplicate.headers["Retry-After"] == "1"
    first.join()
    assert results[0].status_code == 200
    assert logits(api, task_id, "slow").headers[REPLAYED_HEADER] == "true"
    assert images_charged(api) == 4


def test_quota_is_atomic_with_the_charge_under_concurrency(api: TestClient) -> None:
    task_id = task(api)
    assert logits(api, task_id, None, n=16).status_code == 200  # 16 of 40 used
    statuses: list[int] = []
    with backend(api).gate.image():  # let all eight pass the early check before any is charged
        threads = [
            threading.Thread(
                target=lambda s=seed: statuses.append(logits(api, task_id, None, s, 8).status_code)
            )
            for seed in range(8)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200] + [429] * 5
    assert images_charged(api) == 40


def test_answers_expire_then_ids_expire(ledger_target: Path | str) -> None:
    api = start(ledger_target, "--replay-ttl-s", "0.3", "--idempotency-window-s", "1.0")
    try:
        task_id = task(api)
        assert logits(api, task_id, "r").status_code == 200
        time.sleep(0.4)
        gone = logits(api, task_id, "r")
        assert code(gone) == (410, "replay_expired") and "not recomputed" in gone.json()["error"]["message"]
        assert images_charged(api) == 4
        time.sleep(0.7)
        fresh = logits(api, task_id, "r")  # past the published window the id is a new id
        assert fresh.status_code == 200 and REPLAYED_HEADER not in fresh.headers
        assert images_charged(api) == 8
        info = api.get(Routes.INFO, headers=ALICE).json()
        assert (info["replay_ttl_s"], info["idempotency_window_s"]) == (0.3, 1.0)
    finally:
        api.__exit__(None, None, None)


def test_an_answer_over_the_store_cap_is_not_kept_and_never_recomputed(ledger_target: Path | str) -> None:
    api = start(ledger_target, "--replay-store-mb", "0.00001")  # 10 bytes: no answer fits
    try:
        task_id = task(api)
        assert logits(api, task_id, "r").status_code == 200
        assert code(logits(api, task_id, "r")) == (410, "replay_expired")
        assert images_charged(api) == 4
    finally:
        api.__exit__(None, None, None)


def test_one_keys_answers_cannot_evict_another_keys(ledger_target: Path | str) -> None:
    # a store of 2,000 bytes, a key's share 500: about five of these answers (87 bytes) a key
    api = start(ledger_target, "--replay-store-mb", str(2000 / 2**20), "--replay-store-key-share", "0.25")
    try:
        bob_task, alice_task = task(api, BOB), task(api)
        first = logits(api, bob_task, "bob-1", headers=BOB)
        assert first.status_code == 200 and len(first.content) <= 100
        for index in range(25):  # more than the whole store
            assert logits(api, alice_task, f"a-{index}", seed=index).status_code == 200
        again = logits(api, bob_task, "bob-1", headers=BOB)
        assert again.status_code == 200 and again.headers[REPLAYED_HEADER] == "true"
        assert again.content == first.content
        assert code(logits(api, alice_task, "a-0", seed=0)) == (410, "replay_expired")  # her own oldest went
        assert logits(api, alice_task, "a-24", seed=24).headers[REPLAYED_HEADER] == "true"
        assert images_charged(api) == 100 and images_charged(api, BOB) == 4  # each answer charged once
    finally:
        api.__exit__(None, None, None)


def test_registration_is_idempotent_too(api: TestClient) -> None:
    body = {"class_names": ["x", "y"], "templates": ["{}", "a {}"]}
    headers = {**ALICE, REQUEST_ID_HEADER: "reg-1"}
    first = api.post(Routes.TASKS, json=body, headers=headers)
    again = api.post(Routes.TASKS, json=body, headers=headers)
    assert first.status_code == again.status_code == 200 and again.headers[REPLAYED_HEADER] == "true"
    other = api.post(Routes.TASKS, json={"class_names": ["z"]}, headers=headers)
    assert code(other) == (422, "idempotency_mismatch")
    usage = UsageResponse.model_validate(api.get(Routes.USAGE, headers=ALICE).json())
    assert usage.by_endpoint["tasks"].requests == 1 and usage.by_endpoint["tasks"].texts == 4
