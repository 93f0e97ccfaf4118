"""The batcher inside the real server with the real tiny model: answers agree with the unbatched
path, a request's answer does not depend on what shared its forward (fixed-shape padding), tasks
differ within one forward, a full queue is a 503 with Retry-After and charges nothing, and /v1/info
says how forwards run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from server import create_app, parse_args
from server.serving.batcher import DynamicBatcher
from server.serving.service import wire_view
from shared.codec import pack, unpack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    ErrorBody,
    InfoResponse,
    LogitsResponse,
    LossResponse,
    Routes,
    UsageResponse,
    WireTensor,
)
from tests.helpers import random_images, tiny_argv


def start(tmp_path: Path, *flags: str) -> TestClient:
    client = TestClient(create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3", *flags), env={})))
    client.__enter__()
    deadline = time.monotonic() + 120
    while client.get(Routes.HEALTH).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestClient]]:
    folder = tmp_path_factory.mktemp("serving")
    made = {
        "batched": start(folder / "a", "--max-forward-batch", "8", "--max-queue-delay-ms", "20"),
        "unbatched": start(folder / "b", "--max-forward-batch", "8", "--no-batcher"),
    }
    yield made
    for client in made.values():
        client.__exit__(None, None, None)


def register(api: TestClient, classes: list[str]) -> str:
    return api.post(Routes.TASKS, json={"class_names": classes}).json()["task_id"]


def post_logits(api: TestClient, task_id: str, images: np.ndarray):
    body = pack({"images": WireTensor.from_numpy(images).model_dump()})
    return api.post(
        Routes.LOGITS.format(task_id=task_id), content=body, headers={"Content-Type": MSGPACK_CONTENT_TYPE}
    )


def logits_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return WireTensor.model_validate(unpack(response.content)["logits"]).to_numpy()


def wait_until(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def start_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def in_parallel(calls: dict[str, object]) -> dict[str, object]:
    results: dict[str, object] = {}
    threads = [threading.Thread(target=lambda n=n, c=c: results.update({n: c()})) for n, c in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_batched_answers_agree_with_the_unbatched_path(servers) -> None:
    images = random_images(19, "uint8", seed=4)
    answers = {}
    for name, api in servers.items():
        answers[name] = logits_of(post_logits(api, register(api, ["cat", "dog", "car"]), images))
    np.testing.assert_allclose(answers["batched"], answers["unbatched"], rtol=1e-5, atol=1e-5)


def test_tasks_differ_within_one_forward_and_sharing_changes_no_bit(servers) -> None:
    api = servers["batched"]
    backend = api.app.state.blackvip.service.backend
    tasks = {"two": register(api, ["a", "b"]), "five": register(api, ["v", "w", "x", "y", "z"])}
    images = {"two": random_images(3, "uint8", seed=1), "five": random_images(2, "float32", seed=2)}
    alone = {name: logits_of(post_logits(api, tasks[name], images[name])) for name in tasks}
    batcher = api.app.state.blackvip.service.batcher
    taken = batcher.images_taken
    with backend.gate.image():  # a first request waits in the worker's forward while both others queue
        held = start_thread(lambda: post_logits(api, tasks["two"], random_images(1, "uint8")))
        wait_until(lambda: batcher.images_taken == taken + 1)
        before, results = batcher.forwards, {}
        calls = [
            start_thread(lambda n=n: results.update({n: post_logits(api, tasks[n], images[n])}))
            for n in tasks
        ]
        wait_until(lambda: batcher.queued_images == 5)
    for thread in [held, *calls]:
        thread.join(timeout=60)
    shared = {name: logits_of(response) for name, response in results.items()}
    assert batcher.forwards - before == 2  # the held one, then one for both
    for name in tasks:
        assert shared[name].shape == (len(images[name]), 2 if name == "two" else 5)
        np.testing.assert_array_equal(shared[name], alone[name])


def test_padding_makes_features_independent_of_batch_composition(servers) -> None:
    backend = servers["batched"].app.state.blackvip.service.backend
    images = random_images(3, "uint8", seed=7)
    others = random_images(5, "float32", seed=8)
    shapes = servers["batched"].app.state.blackvip.service.forward_shapes  # as the server runs them
    padded = DynamicBatcher(backend.image_features, 8, 0.05, 100, shapes=shapes)
    exact = DynamicBatcher(backend.image_features, 8, 0.05, 100)
    try:
        alone = padded.submit(images)[0]
        together = in_parallel(
            {"mine": lambda: padded.submit(images), "theirs": lambda: padded.submit(others)}
        )
        assert torch.equal(together["mine"][0], alone)
        unpadded = exact.submit(images)[0]
        torch.testing.assert_close(unpadded, alone, rtol=1e-5, atol=1e-6)
    finally:
        padded.close(10)
        exact.close(10)


def test_a_full_queue_is_a_503_with_retry_after_and_charges_nothing(tmp_path: Path) -> None:
    api = start(tmp_path, "--max-forward-batch", "4", "--max-queue-images", "4")
    try:
        task_id = register(api, ["a", "b"])
        service = api.app.state.blackvip.service
        batcher, results = service.batcher, {}

        def send(name: str) -> threading.Thread:
            call = threading.Thread(
                target=lambda: results.update({name: post_logits(api, task_id, random_images(4, "uint8"))})
            )
            call.start()
            return call

        with service.backend.gate.image():  # the first waits in the worker's forward, the second queued
            first = send("first")
            wait_until(lambda: batcher.images_taken == 4)
            second = send("second")
            wait_until(lambda: batcher.queued_images == 4)
            refused = post_logits(api, task_id, random_images(2, "uint8"))
        first.join(timeout=30)
        second.join(timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert ErrorBody.model_validate(refused.json()).error.code.value == "queue_full"
        assert results["first"].status_code == 200 and results["second"].status_code == 200
        usage = UsageResponse.model_validate(api.get(Routes.USAGE).json())
        assert (usage.total.requests, usage.total.images) == (3, 8)  # the task and the two answers
    finally:
        api.__exit__(None, None, None)


def test_info_reports_how_forwards_run(servers) -> None:
    batched = InfoResponse.model_validate(servers["batched"].get(Routes.INFO).json()).serving
    unbatched = InfoResponse.model_validate(servers["unbatched"].get(Routes.INFO).json()).serving
    assert batched is not None and unbatched is not None
    assert (batched.batcher, batched.max_forward_batch, batched.max_queue_delay_ms) == (True, 8, 20.0)
    assert (batched.device, batched.precision, batched.channels_last) == ("cpu", "fp32", False)
    assert (batched.batch_padding, batched.forward_shapes, batched.max_queue_images) == (
        "fixed",
        [4, 8],
        8192,
    )
    assert batched.warmup_s > 0
    assert unbatched.batcher is False


def test_half_precision_on_a_cpu_serves_fp32(tmp_path: Path) -> None:
    api = start(tmp_path, "--precision", "fp16")
    try:
        serving = InfoResponse.model_validate(api.get(Routes.INFO).json()).serving
        assert serving is not None and serving.precision == "fp32"
        assert (
            logits_of(post_logits(api, register(api, ["a", "b"]), random_images(2, "uint8"))).dtype
            == np.float32
        )
    finally:
        api.__exit__(None, None, None)


@pytest.mark.parametrize("shape", [(5, 3), (7,), (1, 1000)])
def test_answers_packed_from_a_view_are_the_bytes_the_protocol_models_make(shape) -> None:
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    correct = [True] * shape[0]
    # protocol 1.6: the fields a level does not reveal are absent from the answer, not null
    assert pack({"logits": wire_view(values)}) == pack(
        LogitsResponse(logits=WireTensor.from_numpy(values)).model_dump(exclude_none=True)
    )
    assert pack({"losses": wire_view(values), "correct": correct}) == pack(
        LossResponse(losses=WireTensor.from_numpy(values), correct=correct).model_dump()
    )
