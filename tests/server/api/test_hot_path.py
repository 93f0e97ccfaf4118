"""The logits and loss routes' path (issue 27): a task this process has read once is not read from the
ledger again, another key's task id stays unknown however often its owner used it, and the steps keep
their order of errors (task, then body, then images, then labels)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.protocol import Routes
from tests.helpers import random_images
from tests.server.api.test_api import BOB, error_of, images_payload, post_msgpack, task_id  # noqa: F401


@pytest.fixture
def task_reads(api) -> Iterator[list[str]]:
    """Every task id the ledger is asked for while the test runs (the real ledger answers)."""
    ledger = api.app.state.blackvip.service.ledger
    reads: list[str] = []
    load_task = ledger.load_task

    def counted(asked: str, key_id: str):
        reads.append(asked)
        return load_task(asked, key_id)

    ledger.load_task = counted
    try:
        yield reads
    finally:
        del ledger.load_task  # the instance attribute: the class's method answers again


def test_a_known_task_is_not_read_from_the_ledger_again(api, task_id: str, task_reads: list[str]) -> None:  # noqa: F811
    images = random_images(2, "uint8", seed=3)
    payloads = {Routes.LOGITS: images_payload(images), Routes.LOSS: images_payload(images, labels=[0, 1])}
    for route in (Routes.LOGITS, Routes.LOSS) * 3:
        assert post_msgpack(api, route.format(task_id=task_id), payloads[route]).status_code == 200
    assert task_reads.count(task_id) <= 1  # at most the first call, if no route had used it before


def test_another_keys_task_stays_unknown_after_its_owner_used_it(api, task_id: str) -> None:  # noqa: F811
    payload = images_payload(random_images(1, "uint8", seed=4))
    assert post_msgpack(api, Routes.LOGITS.format(task_id=task_id), payload).status_code == 200
    status, code, _ = error_of(post_msgpack(api, Routes.LOGITS.format(task_id=task_id), payload, BOB))
    assert (status, code) == (404, "not_found")


def test_errors_keep_their_order(api, task_id: str) -> None:  # noqa: F811
    route = Routes.LOSS.format(task_id=task_id)
    bad_images = images_payload(random_images(1, "uint8", seed=5)[:, :2], labels=[0])
    unknown = Routes.LOSS.format(task_id="nope")
    assert error_of(post_msgpack(api, unknown, bad_images))[:2] == (404, "not_found")
    assert error_of(post_msgpack(api, route, bad_images))[:2] == (422, "invalid_tensor")
    bad_labels = images_payload(random_images(2, "uint8", seed=5), labels=[0, 99])
    assert error_of(post_msgpack(api, route, bad_labels))[:2] == (422, "invalid_labels")
    assert error_of(post_msgpack(api, route, [1, 2]))[:2] == (400, "malformed_body")
