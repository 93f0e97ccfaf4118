"""Bad traffic cannot bend the server: bounded task registration, small error bodies, rejections
counted without a durable write each, a ledger that cannot commit answers 503 (nothing charged)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server import create_app, parse_args
from server.errors import MAX_ERROR_BYTES
from server.settings import SettingsError
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, ErrorBody, Routes, UsageResponse, WireTensor
from tests.helpers import KEYS, random_images, tiny_argv

ALICE = {"Authorization": f"Bearer {KEYS[0]}"}
LIMITS = (
    "--max-classes", "5", "--max-templates", "3", "--max-class-name-chars", "20",
    "--max-template-chars", "30", "--max-texts", "12", "--max-tasks-per-key", "3",
    "--max-task-bytes", "4096", "--ledger-busy-timeout-s", "0.2", "--rejection-flush-s", "0.2",
)  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    ledger = tmp_path_factory.mktemp("bounds") / "l.sqlite3"
    settings = parse_args(tiny_argv(ledger, *LIMITS), env={"BLACKVIP_API_KEYS": ",".join(KEYS)})
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get(Routes.HEALTH).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.ledger_path = ledger
        yield client


def error(response) -> tuple[int, str, str]:
    body = ErrorBody.model_validate(response.json())
    return response.status_code, body.error.code.value, body.error.message


def usage(api: TestClient) -> UsageResponse:
    return UsageResponse.model_validate(api.get(Routes.USAGE, headers=ALICE).json())


@pytest.mark.parametrize(
    ("task", "fragment"),
    [
        ({"class_names": list("abcdef")}, "6 class names; this server accepts at most 5"),
        ({"class_names": ["a"], "templates": ["{}"] * 4}, "4 templates; this server accepts at most 3"),
        ({"class_names": list("abcde"), "templates": ["{}", "a {}", "b {}"]}, "15 class x template texts"),
        ({"class_names": ["x" * 21]}, "class_names[0] has 21 characters; this server accepts at most 20"),
        ({"class_names": ["a"], "templates": ["{}" + "y" * 29]}, "templates[0] has 31 characters"),
        ({"class_names": ["a"], "templates": ["a {} {x}"]}, "exactly one '{}' field; found 2"),
        ({"class_names": ["a"], "templates": ["{}}"]}, "unbalanced braces"),
        ({"class_names": ["a"], "templates": ["{0}{}"]}, "found 2"),
        ({"class_names": ["a"], "templates": ["{}{:>5}"]}, "found 2"),
        ({"class_names": ["a"], "templates": ["{:>9999}"]}, "no name, index, conversion or format spec"),
        ({"class_names": ["a"], "templates": ["{!r}"]}, "no name, index, conversion or format spec"),
        ({"class_names": ["a"], "templates": ["no field"]}, "found 0"),
        ({"class_names": []}, "class_names"),
    ],
)
def test_task_limits_and_template_rules_are_422_naming_the_rule(api, task, fragment) -> None:
    before = usage(api).total
    status, code, message = error(api.post(Routes.TASKS, json=task, headers=ALICE))
    assert (status, code) == (422, "validation_error") and fragment in message, message
    assert usage(api).total == before  # nothing formatted, tokenised or charged


def test_escaped_braces_are_literal_and_limits_are_published(api) -> None:
    ok = api.post(Routes.TASKS, json={"class_names": ["a"], "templates": ["{{x}} {}"]}, headers=ALICE)
    assert ok.status_code == 200, ok.text
    limits = api.get(Routes.INFO, headers=ALICE).json()["task_limits"]
    assert limits == {
        "max_task_bytes": 4096, "max_classes": 5, "max_templates": 3, "max_class_name_chars": 20,
        "max_template_chars": 30, "max_texts": 12, "max_tasks_per_key": 3,
        "max_task_store_bytes_per_key": 16 * 2**20,
    }  # fmt: skip


def test_a_registration_body_over_its_cap_is_413(api) -> None:
    body = json.dumps({"class_names": ["a"] * 2000})
    assert error(api.post(Routes.TASKS, content=body, headers={**ALICE, "Content-Type": "application/json"}))[
        :2
    ] == (413, "body_too_large")


def test_tasks_per_key_are_capped(api) -> None:
    codes = [
        api.post(
            Routes.TASKS, json={"class_names": [f"c{i}"]}, headers={"Authorization": f"Bearer {KEYS[1]}"}
        )
        for i in range(5)
    ]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    assert error(codes[3])[1] == "task_limit_reached"


@pytest.mark.parametrize(
    "payload",
    [
        {"images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump(), "labels": ["x"] * 30000},
        {"images": {"shape": [1], "dtype": "z" * 60000, "data": b""}, "labels": [0]},
        {
            "images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump(),
            **{f"k{i}": i for i in range(200)},
        },
    ],
)
def test_error_bodies_stay_small_whatever_the_input(api, payload) -> None:
    task_id = api.post(Routes.TASKS, json={"class_names": ["a", "b"]}, headers=ALICE).json()["task_id"]
    body = pack(payload)
    response = api.post(
        Routes.LOSS.format(task_id=task_id),
        content=body,
        headers={**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE},
    )
    assert 400 <= response.status_code < 500
    assert len(response.content) <= MAX_ERROR_BYTES, len(response.content)
    assert (
        "pydantic.dev" not in response.text
        and "/work" not in response.text
        and "site-packages" not in response.text
    )


def test_long_echoes_are_cut(api) -> None:
    response = api.post(Routes.TASKS, content=b"{}", headers={**ALICE, "Content-Type": "text/" + "x" * 5000})
    assert error(response)[:2] == (415, "unsupported_media_type")
    assert len(response.content) < 600
    missing = api.get(Routes.TASK.format(task_id="t" * 5000), headers=ALICE)
    assert error(missing)[:2] == (404, "not_found") and len(missing.content) < 600


def test_rejections_are_counted_by_route_template_not_by_what_was_sent(api) -> None:
    for index in range(30):
        api.get(f"/v1/made-up-{index}", headers=ALICE)
        api.get(Routes.INFO, headers={"Authorization": f"Bearer wrong-{index}"})
    time.sleep(0.6)  # a flush period or two
    with sqlite3.connect(api.ledger_path) as db:
        rows = db.execute("SELECT key_id, route, status, code, count FROM rejection_counts").fetchall()
    labels = {row[:4] for row in rows}
    assert ("unauthenticated", "/v1/info", 401, "unauthorized") in labels
    assert any(row[1] == "unmatched" and row[2] == 404 for row in rows)
    assert not any("made-up" in str(row) or "wrong-" in str(row) for row in rows)
    assert sum(row[4] for row in rows if row[0] == "unauthenticated" and row[2] == 401) >= 30


def test_a_ledger_that_cannot_commit_answers_503_charges_nothing_and_health_says_degraded(api) -> None:
    task_id = api.post(Routes.TASKS, json={"class_names": ["a", "b"]}, headers=ALICE).json()["task_id"]
    before = usage(api).total
    body = pack({"images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump()})
    headers = {**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE}
    blocker = sqlite3.connect(api.ledger_path, isolation_level=None, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: commits cannot happen
    try:
        refused = api.post(Routes.LOGITS.format(task_id=task_id), content=body, headers=headers)
        assert error(refused)[:2] == (503, "ledger_unavailable") and refused.headers["Retry-After"] == "2"
        health = api.get(Routes.HEALTH)
        assert (health.status_code, health.json()["status"]) == (503, "degraded")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    deadline = time.monotonic() + 10
    while api.get(Routes.HEALTH).status_code != 200:  # the next heartbeat proves commits work again
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert usage(api).total == before
    assert api.post(Routes.LOGITS.format(task_id=task_id), content=body, headers=headers).status_code == 200


def test_an_open_server_is_refused_off_loopback_unless_asked_for() -> None:
    with pytest.raises(SettingsError, match="--allow-open"):
        parse_args(["--host", "0.0.0.0", "--model", "tiny-vit", "--random-init"], env={})
    assert parse_args(["--host", "0.0.0.0", "--model", "tiny-vit", "--random-init", "--allow-open"], env={})
    keyed = parse_args(
        ["--host", "0.0.0.0", "--model", "tiny-vit", "--random-init"], env={"BLACKVIP_API_KEYS": "k"}
    )
    assert keyed.host == "0.0.0.0"
    assert parse_args(["--host", "::1", "--model", "tiny-vit", "--random-init"], env={}).host == "::1"
