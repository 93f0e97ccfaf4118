"""Access levels on the real app (real tiny open_clip model, real SQLite ledger with managed keys): what
each level answers on ``/logits`` against the level-logits answer for the same images, rounding, seeded
noise (repeats and replays alike), the 403 refusals (a route the level does not answer, a level the
server does not offer, a level the key may not use) with nothing charged, top-k's k checked at
registration, a level's own price in the charge, and the levels in ``/v1/info`` and ``/v1/usage``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from server.ledger import Ledger
from server.ledger.interface import KeyLimits, ManagedKey
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from shared.codec import pack, unpack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    ErrorBody,
    InfoResponse,
    LogitsResponse,
    Routes,
    TaskResponse,
    UsageResponse,
    WireTensor,
)
from tests.helpers import random_images, tiny_argv

SECRETS = {"full": "bvk_full-key", "narrow": "bvk_narrow-key", "capped": "bvk_capped-key"}
LIMITS = {
    "full": KeyLimits(),
    "narrow": KeyLimits(levels=("logits", "top-k")),
    "capped": KeyLimits(quota_cost=0.003),
}
CLASSES = ["zero", "one", "two", "three", "four"]
LABEL_PRICE = 0.25  # per 1,000 images; every other level costs the server's 1.0


def headers(name: str = "full") -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def start(path: Path, *flags: str) -> TestClient:
    settings = parse_args(tiny_argv(path, "--price-per-1k-texts", "0", *flags), env={})
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 120
    while client.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("levels") / "ledger.sqlite3"
    with closing(Ledger(path)) as ledger:
        for name, secret in SECRETS.items():
            digest = hash_api_key(secret)
            ledger.keys.create(ManagedKey(key_id_for(digest), digest, name, time.time(), None, LIMITS[name]))
    client = start(path, "--level-price", f"label={LABEL_PRICE}")
    yield client
    client.__exit__(None, None, None)


def register(app: TestClient, name: str = "full", **access: Any) -> Any:
    return app.post(Routes.TASKS, json={"class_names": CLASSES, "access": access}, headers=headers(name))


def task_of(app: TestClient, **access: Any) -> str:
    response = register(app, **access)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def images_body(n: int = 6, seed: int = 0, **extra: Any) -> bytes:
    return pack({"images": WireTensor.from_numpy(random_images(n, "uint8", seed=seed)).model_dump(), **extra})


def post(app: TestClient, route: str, task_id: str, body: bytes, name: str = "full", rid: str | None = None):
    extra = {REQUEST_ID_HEADER: rid} if rid else {}
    return app.post(
        route.format(task_id=task_id),
        content=body,
        headers={**headers(name), "Content-Type": MSGPACK_CONTENT_TYPE, **extra},
    )


def answer(app: TestClient, task_id: str, body: bytes) -> dict[str, Any]:
    response = post(app, Routes.LOGITS, task_id, body)
    assert response.status_code == 200, response.text
    return unpack(response.content)


def tensor(field: dict[str, Any]) -> np.ndarray:
    return WireTensor.model_validate(field).to_numpy()


def usage(app: TestClient, name: str = "full") -> UsageResponse:
    return UsageResponse.model_validate(app.get(Routes.USAGE, headers=headers(name)).json())


def error_of(response: Any) -> tuple[int, str, str]:
    error = ErrorBody.model_validate(response.json()).error
    return response.status_code, error.code.value, error.message


def test_each_level_answers_only_what_it_reveals_of_the_logits(app: TestClient) -> None:
    body = images_body()
    default = post(app, Routes.LOGITS, task_of(app), body)
    explicit = post(app, Routes.LOGITS, task_of(app, level="logits"), body)
    assert explicit.content == default.content  # level logits: today's answer, byte for byte
    logits = tensor(unpack(default.content)["logits"])
    assert logits.shape == (6, len(CLASSES))

    probabilities = answer(app, task_of(app, level="probabilities"), body)
    assert probabilities.keys() == {"probabilities"}
    p = tensor(probabilities["probabilities"])
    assert p.shape == (6, 5) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p.argmax(axis=1) == logits.argmax(axis=1)).all()

    top = answer(app, task_of(app, level="top-k", k=3), body)
    assert top.keys() == {"classes", "probabilities"}
    classes, top_p = np.array(top["classes"]), tensor(top["probabilities"])
    assert classes.shape == top_p.shape == (6, 3)
    np.testing.assert_array_equal(classes, np.argsort(-logits, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(top_p, np.take_along_axis(p, classes, axis=1), rtol=1e-6)
    assert (np.diff(top_p, axis=1) <= 0).all()  # most probable first

    labels = answer(app, task_of(app, level="label"), body)
    assert labels.keys() == {"labels"} and labels["labels"] == logits.argmax(axis=1).tolist()
    LogitsResponse.model_validate({**labels})  # each answer is the documented shape


def test_decimals_round_the_revealed_scores_and_the_losses(app: TestClient) -> None:
    body = images_body(seed=1)
    logits = tensor(answer(app, task_of(app), body)["logits"])
    rounded = tensor(answer(app, task_of(app, decimals=1), body)["logits"])
    np.testing.assert_array_equal(rounded, np.round(logits, 1))
    p = tensor(answer(app, task_of(app, level="probabilities", decimals=2), body)["probabilities"])
    np.testing.assert_array_equal(p, np.round(p, 2))
    labels = np.arange(6) % len(CLASSES)
    loss_body = images_body(seed=1, labels=labels.tolist())
    losses = post(app, Routes.LOSS, task_of(app, level="loss", decimals=2), loss_body)
    assert losses.status_code == 200, losses.text
    values = tensor(unpack(losses.content)["losses"])
    np.testing.assert_array_equal(values, np.round(values, 2))
    exact = tensor(unpack(post(app, Routes.LOSS, task_of(app), loss_body).content)["losses"])
    np.testing.assert_allclose(values, exact, atol=0.005 + 1e-6)


def test_noise_is_seeded_by_the_request_a_repeat_and_a_replay_get_the_same(app: TestClient) -> None:
    task_id = task_of(app, noise_std=0.5)
    body = images_body(seed=2)
    clean = tensor(answer(app, task_of(app), body)["logits"])
    first = tensor(answer(app, task_id, body)["logits"])
    assert not np.array_equal(first, clean)
    assert 0.2 < float(np.std(first - clean)) < 1.0  # noise of about the asked deviation
    np.testing.assert_array_equal(tensor(answer(app, task_id, body)["logits"]), first)  # a repeat
    other = tensor(answer(app, task_id, images_body(seed=2, precision="serving"))["logits"])
    assert not np.array_equal(other, first)  # another body (the same images): other noise
    before = usage(app).total.images
    charged = post(app, Routes.LOGITS, task_id, body, rid="noisy-1")
    replayed = post(app, Routes.LOGITS, task_id, body, rid="noisy-1")
    assert replayed.headers.get(REPLAYED_HEADER) == "true" and replayed.content == charged.content
    np.testing.assert_array_equal(tensor(unpack(charged.content)["logits"]), first)
    assert usage(app).total.images == before + 6  # charged once
    label_task = task_of(app, level="label", noise_std=50.0)
    noisy_labels = answer(app, label_task, body)["labels"]
    assert noisy_labels == answer(app, label_task, body)["labels"]


def test_routes_the_level_does_not_answer_are_403_and_never_charged(app: TestClient) -> None:
    loss_body = images_body(labels=[0] * 6)
    before = usage(app)
    for level in ({"level": "probabilities"}, {"level": "top-k", "k": 2}, {"level": "label"}):
        refused = post(app, Routes.LOSS, task_of(app, **level), loss_body, rid=f"refused-{level['level']}")
        status, code, message = error_of(refused)
        assert (status, code) == (403, "access_denied") and level["level"] in message, message
    status, code, message = error_of(post(app, Routes.LOGITS, task_of(app, level="loss"), images_body()))
    assert (status, code) == (403, "access_denied") and "level loss" in message
    after = usage(app)
    assert after.total.images == before.total.images  # registrations only: no image was charged
    assert after.by_endpoint.keys() == before.by_endpoint.keys() | {"tasks"}
    assert after.rejected_by_status.get("403", 0) >= 4


def test_a_level_the_key_may_not_use_is_403_naming_its_levels(app: TestClient) -> None:
    status, code, message = error_of(register(app, "narrow", level="label"))
    assert (status, code) == (403, "access_denied")
    assert "label" in message and "logits, top-k" in message
    assert register(app, "narrow", level="top-k", k=2).status_code == 200
    assert usage(app, "narrow").quota.levels == ["logits", "top-k"]
    assert usage(app, "full").quota.levels is None


def test_top_k_beyond_the_classes_is_422_naming_k_and_the_count(app: TestClient) -> None:
    status, code, message = error_of(register(app, level="top-k", k=6))
    assert (status, code) == (422, "validation_error") and "k=6" in message and "5" in message
    status, code, _ = error_of(register(app, level="top-k"))  # no k at all: the model's own check
    assert (status, code) == (422, "validation_error")


def test_a_levels_own_price_is_charged_and_info_lists_the_prices(app: TestClient) -> None:
    info = InfoResponse.model_validate(app.get(Routes.INFO, headers=headers()).json())
    prices = {entry.level.value: entry.price_per_1k_images for entry in info.access_levels or []}
    assert prices == {"logits": 1.0, "loss": 1.0, "probabilities": 1.0, "top-k": 1.0, "label": LABEL_PRICE}
    task_id = task_of(app, level="label", decimals=3)  # a task of its own: registering it costs 0 here
    before = usage(app).total.cost
    assert post(app, Routes.LOGITS, task_id, images_body(8)).status_code == 200
    assert usage(app).total.cost - before == pytest.approx(8 * LABEL_PRICE / 1000)
    before = usage(app).total.cost
    assert post(app, Routes.LOGITS, task_of(app), images_body(8)).status_code == 200
    assert usage(app).total.cost - before == pytest.approx(8 / 1000)


def test_the_cost_quota_is_checked_at_the_levels_price(app: TestClient) -> None:
    label = register(app, "capped", level="label").json()["task_id"]
    plain = register(app, "capped").json()["task_id"]
    refused = post(app, Routes.LOGITS, plain, images_body(8), name="capped")  # 0.008 > 0.003
    status, code, _ = error_of(refused)
    assert (status, code) == (429, "quota_exceeded")
    assert ErrorBody.model_validate(refused.json()).error.detail["requested_cost"] == pytest.approx(0.008)
    assert post(app, Routes.LOGITS, label, images_body(8), name="capped").status_code == 200  # 0.002
    assert usage(app, "capped").total.cost == pytest.approx(0.002)


def test_the_task_records_its_access_and_two_levels_are_two_tasks(app: TestClient) -> None:
    plain, top = register(app).json(), register(app, level="top-k", k=2, decimals=3).json()
    assert plain["task_id"] != top["task_id"]
    fetched = TaskResponse.model_validate(
        app.get(Routes.TASK.format(task_id=top["task_id"]), headers=headers()).json()
    )
    assert fetched.access.level.value == "top-k" and (fetched.access.k, fetched.access.decimals) == (2, 3)
    assert TaskResponse.model_validate(plain).access.level.value == "logits"


def test_a_level_the_server_does_not_offer_is_403(tmp_path: Path) -> None:
    client = start(tmp_path / "ledger.sqlite3", "--access-levels", "logits,label")
    try:
        response = client.post(
            Routes.TASKS, json={"class_names": CLASSES, "access": {"level": "probabilities"}}
        )
        status, code, message = error_of(response)
        assert (status, code) == (403, "access_denied")
        assert "probabilities" in message and "logits, label" in message
        info = InfoResponse.model_validate(client.get(Routes.INFO).json())
        assert [entry.level.value for entry in info.access_levels or []] == ["logits", "label"]
        ok = client.post(Routes.TASKS, json={"class_names": CLASSES, "access": {"level": "label"}})
        assert ok.status_code == 200, ok.text
    finally:
        client.__exit__(None, None, None)
