"""Keys from the ledger on the real app (real tiny model, real SQLite file): per-key rate limits (429
``rate_limited`` with ``Retry-After``, never charged), per-key image and cost quotas, the quota in
``/v1/usage``, ``/v1/usage/periods`` against the ledger's sums, and keys that must not work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
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
    ErrorBody,
    KeyQuota,
    Routes,
    UsagePeriodsResponse,
    UsageResponse,
    WireTensor,
)
from tests.helpers import random_images, tiny_argv

SECRETS = {
    "slow": "bvk_slow-key",  # 0.01 requests a second: one request, then 100 s to wait
    "capped": "bvk_capped-key",  # 20 images or 0.012 in cost, whichever comes first
    "plain": "bvk_plain-key",
    "revoked": "bvk_revoked-key",
}
LIMITS = {
    "slow": KeyLimits(rate_per_s=0.01),
    "capped": KeyLimits(quota_images=20, quota_cost=0.012),
    "plain": KeyLimits(),
    "revoked": KeyLimits(),
}


def key_id(name: str) -> str:
    return key_id_for(hash_api_key(SECRETS[name]))


def headers(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("keys") / "ledger.sqlite3"
    with closing(Ledger(path)) as ledger:
        for name, secret in SECRETS.items():
            digest = hash_api_key(secret)
            ledger.keys.create(ManagedKey(key_id_for(digest), digest, name, time.time(), None, LIMITS[name]))
        ledger.keys.revoke(key_id("revoked"), time.time())
    # texts free here: the cost figures below are images alone (texts are priced in test_text_work)
    settings = parse_args(tiny_argv(path, "--price-per-1k-images", "1", "--price-per-1k-texts", "0"), env={})
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get(Routes.HEALTH).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield client


def ledger_of(app: TestClient) -> Ledger:
    return app.app.state.blackvip.ledger


def register(app: TestClient, name: str) -> str:
    response = app.post(Routes.TASKS, json={"class_names": ["a", "b"]}, headers=headers(name))
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def send_logits(app: TestClient, name: str, task_id: str, n: int) -> Any:
    body = pack({"images": WireTensor.from_numpy(random_images(n, "uint8")).model_dump()})
    path = Routes.LOGITS.format(task_id=task_id)
    return app.post(path, content=body, headers={**headers(name), "Content-Type": MSGPACK_CONTENT_TYPE})


def test_a_rate_limited_request_is_429_with_retry_after_and_never_charged(app: TestClient) -> None:
    task_id = register(app, "slow")  # the one token
    refused = send_logits(app, "slow", task_id, 4)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "100"
    error = ErrorBody.model_validate(refused.json()).error
    assert error.code.value == "rate_limited" and "0.01 requests a second" in error.message
    assert error.detail is not None and error.detail["rate_per_s"] == 0.01
    assert app.get(Routes.USAGE, headers=headers("slow")).status_code == 429  # every keyed route counts
    ledger = ledger_of(app)
    assert ledger.usage_by_endpoint(key_id("slow")).keys() == {"tasks"}  # the logits were never charged
    rejections = app.app.state.blackvip.rejections
    assert rejections.by_status(ledger, key_id("slow")) == {"429": 2}
    assert send_logits(app, "plain", register(app, "plain"), 2).status_code == 200  # other keys unslowed


def test_a_keys_image_and_cost_quotas_and_what_usage_says_is_left(app: TestClient) -> None:
    task_id = register(app, "capped")
    assert send_logits(app, "capped", task_id, 8).status_code == 200
    usage = UsageResponse.model_validate(app.get(Routes.USAGE, headers=headers("capped")).json())
    assert usage.quota is not None
    assert (usage.quota.images, usage.quota.cost, usage.quota.images_left) == (20, 0.012, 12)
    assert usage.quota.cost_left == pytest.approx(0.004)
    refused = send_logits(app, "capped", task_id, 5)  # 13 images fit the image quota; 0.013 does not
    error = ErrorBody.model_validate(refused.json()).error
    assert refused.status_code == 429 and error.code.value == "quota_exceeded"
    assert error.detail == {"quota_cost": 0.012, "used_cost": pytest.approx(0.008), "requested_cost": 0.005}
    assert "Retry-After" not in refused.headers  # waiting does not bring quota back
    assert send_logits(app, "capped", task_id, 4).status_code == 200  # exactly up to the cost quota
    usage = UsageResponse.model_validate(app.get(Routes.USAGE, headers=headers("capped")).json())
    assert usage.total.images == 12 and usage.quota is not None and usage.quota.images_left == 8
    plain = UsageResponse.model_validate(app.get(Routes.USAGE, headers=headers("plain")).json())
    assert plain.quota == KeyQuota()  # no limits: nothing is left to count down


def test_usage_by_period_equals_the_ledgers_sums(app: TestClient) -> None:
    task_id = register(app, "plain")
    for n in (1, 3, 5):
        assert send_logits(app, "plain", task_id, n).status_code == 200
    totals = UsageResponse.model_validate(app.get(Routes.USAGE, headers=headers("plain")).json()).total
    for by in ("hour", "day"):
        answer = app.get(Routes.USAGE_PERIODS, params={"by": by}, headers=headers("plain"))
        periods = UsagePeriodsResponse.model_validate(answer.json())
        assert periods.key_id == key_id("plain") and periods.by == by and periods.periods
        assert sum(p.requests for p in periods.periods) == totals.requests
        assert sum(p.images for p in periods.periods) == totals.images
        assert sum(p.cost for p in periods.periods) == pytest.approx(totals.cost)
        assert all(p.start.minute == p.start.second == 0 for p in periods.periods)
    rows = list(ledger_of(app).reports.rows(None, None, key_id("plain")))
    assert sum(row.images for row in rows) == totals.images and len(rows) == totals.requests
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None).isoformat()  # no zone: UTC
    future = app.get(Routes.USAGE_PERIODS, params={"since": later}, headers=headers("plain"))
    assert future.status_code == 200 and future.json()["periods"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"by": "week"}, "by"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2025-02-01T00:00Z", "until": "2025-01-01T00:00Z"}, "since"),
        ({"since": "0001-01-01T00:00:00+23:59"}, "since"),  # before UTC's first moment: was a 500
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),  # after UTC's last: was a 500
    ],
)
def test_bad_period_queries_are_422_naming_the_parameter(
    app: TestClient, params: dict[str, str], field: str
) -> None:
    answer = app.get(Routes.USAGE_PERIODS, params=params, headers=headers("plain"))
    assert answer.status_code == 422
    assert field in answer.text


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (f"Bearer {SECRETS['revoked']}", "unknown or revoked API key"),  # as an unknown one: no oracle
        (f"Bearer {key_id('plain')}", "unknown or revoked API key"),  # a key's id is public, no credential
        (f"Bearer {hash_api_key(SECRETS['plain'])}", "unknown or revoked API key"),  # nor its stored hash
        (None, "missing API key"),
    ],
    ids=["revoked", "another-keys-id", "another-keys-hash", "none"],
)
def test_keys_that_must_not_work(app: TestClient, authorization: str | None, message: str) -> None:
    sent = {"Authorization": authorization} if authorization else {}
    answer = app.get(Routes.USAGE, headers=sent)
    assert answer.status_code == 401 and message in answer.json()["error"]["message"]


def test_revoking_every_key_never_opens_the_api(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    digest = hash_api_key("bvk_only")
    with closing(Ledger(path)) as ledger:
        ledger.keys.create(ManagedKey(key_id_for(digest), digest, "only", time.time(), time.time()))
    with TestClient(create_app(parse_args(tiny_argv(path), env={}))) as client:  # no --api-keys
        assert client.get(Routes.USAGE).status_code == 401
        assert client.get(Routes.USAGE, headers={"Authorization": "Bearer bvk_only"}).status_code == 401
    empty = tmp_path / "empty.sqlite3"
    with TestClient(create_app(parse_args(tiny_argv(empty, "--ledger-keys"), env={}))) as client:
        assert client.get(Routes.USAGE).status_code == 401  # --ledger-keys: keyed before the first key
