"""Text work is priced: a registration's texts and any recomputation of an evicted task's features are
charged (once per logical request: a replay recomputes nothing and pays nothing), they count against
a key's cost quota before any text is encoded, and one key's stored tasks are bounded in bytes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from server.ledger import Ledger
from server.ledger.interface import KeyLimits, ManagedKey
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from shared.codec import pack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    REPLAYED_HEADER,
    ErrorBody,
    Routes,
    UsageResponse,
    WireTensor,
)
from tests.helpers import random_images, tiny_argv

SECRETS = {"small": "bvk_small-budget", "other": "bvk_other-key"}
LIMITS = {"small": KeyLimits(quota_cost=0.001), "other": KeyLimits()}


def headers(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def start(ledger: Path, *flags: str) -> TestClient:
    with closing(Ledger(ledger)) as made:
        for name, secret in SECRETS.items():
            digest = hash_api_key(secret)
            made.keys.create(ManagedKey(key_id_for(digest), digest, name, time.time(), None, LIMITS[name]))
    client = TestClient(create_app(parse_args(tiny_argv(ledger, *flags), env={})))
    client.__enter__()
    deadline = time.monotonic() + 120
    while client.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return client


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    # a text cache that holds one task's features: registering a second evicts the first
    client = start(
        tmp_path / "l.sqlite3", "--text-cache-mb", "0.0001", "--max-task-store-bytes-per-key", "1024"
    )
    yield client
    client.__exit__(None, None, None)


def register(api: TestClient, classes: list[str], templates: list[str], who: str = "other") -> Any:
    return api.post(Routes.TASKS, json={"class_names": classes, "templates": templates}, headers=headers(who))


def logits(api: TestClient, task_id: str, request_id: str) -> Any:
    body = pack({"images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump()})
    extra = {"Content-Type": MSGPACK_CONTENT_TYPE, "X-Request-Id": request_id}
    return api.post(
        Routes.LOGITS.format(task_id=task_id), content=body, headers={**headers("other"), **extra}
    )


def usage(api: TestClient, who: str = "other") -> UsageResponse:
    return UsageResponse.model_validate(api.get(Routes.USAGE, headers=headers(who)).json())


def test_a_recompute_after_eviction_is_charged_to_its_request_once(api: TestClient) -> None:
    first = register(api, ["a", "b", "c"], ["{}", "a {}"]).json()["task_id"]  # 6 texts
    register(api, ["x", "y"], ["{}"])  # 2 texts; evicts the first task's features
    service = api.app.state.blackvip.service
    assert first not in service.features
    assert logits(api, first, "r1").status_code == 200  # recomputes the 6 texts
    replay = logits(api, first, "r1")
    assert replay.status_code == 200 and replay.headers[REPLAYED_HEADER] == "true"
    assert logits(api, first, "r2").status_code == 200  # cached again: no text work
    counts = usage(api).by_endpoint
    assert (counts["tasks"].texts, counts["logits"].texts, counts["logits"].images) == (8, 6, 4)
    assert counts["logits"].cost == pytest.approx((4 + 6) * 1.0 / 1000)  # default prices: 1.0 each


def test_a_registration_over_the_cost_quota_is_refused_before_any_text_is_encoded(api: TestClient) -> None:
    refused = register(api, ["a", "b"], ["{}"], who="small")  # 2 texts cost 0.002 > 0.001
    error = ErrorBody.model_validate(refused.json()).error
    assert refused.status_code == 429 and error.code.value == "quota_exceeded"
    assert error.detail == {"quota_cost": 0.001, "used_cost": 0.0, "requested_cost": 0.002}
    assert len(api.app.state.blackvip.service.features._entries) == 0  # nothing was encoded
    assert usage(api, "small").total.requests == 0
    assert register(api, ["a"], ["{}"], who="small").status_code == 200  # 0.001: exactly the quota


def test_one_keys_tasks_are_bounded_in_bytes(api: TestClient) -> None:
    long_names = [f"{'n' * 190}{i:03d}" for i in range(3)]  # 212 bytes of JSON a task
    stored = [register(api, [name], ["{}", f"t{i} {{}}"]) for i, name in enumerate(long_names * 2)]
    statuses = [response.status_code for response in stored]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 200  # re-registering a stored task
    new = register(api, ["m" * 190, "q" * 190, "r" * 190], ["{}"])
    error = ErrorBody.model_validate(new.json()).error
    assert new.status_code == 429 and error.code.value == "task_limit_reached"
    assert error.detail is not None and error.detail["max_task_store_bytes_per_key"] == 1024
    ledger = api.app.state.blackvip.ledger
    other = key_id_for(hash_api_key(SECRETS["other"]))
    assert ledger.task_store_usage(other).bytes <= 1024
    assert register(api, ["m" * 190, "q" * 190, "r" * 190], ["{}"], who="small").status_code == 429  # cost
    assert register(api, ["short"], ["{}"], who="small").status_code == 200  # another key is not full
