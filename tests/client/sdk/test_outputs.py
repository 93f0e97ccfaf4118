"""The SDK at each access level: registering a task's access, decoding each LogitsResponse variant,
``logits()`` refusing an answer without logits, and 403 access_denied."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client import AccessDeniedError, Outputs, ProtocolError
from client._outputs import concat_outputs
from shared.access import Access, AccessLevel
from shared.protocol import ErrorCode, LogitsResponse, Routes, TaskResponse, WireTensor
from tests.client.sdk.test_sdk import (
    NUM_CLASSES,
    TASK_ID,
    FakeServer,
    error_reply,
    images_for,
    json_reply,
    logits_for,
    make_client,
    msgpack_reply,
    raw_reply,
    task_model,
)


def _outputs(reply: LogitsResponse) -> Outputs:
    with make_client(FakeServer(msgpack_reply(reply))) as sdk:
        return sdk.outputs(TASK_ID, images_for(2))


def test_logits_level_answer() -> None:
    logits = logits_for(2, seed=3)
    outputs = _outputs(LogitsResponse(logits=WireTensor.from_numpy(logits)))
    assert outputs.level is AccessLevel.LOGITS and len(outputs) == 2
    assert np.array_equal(outputs.logits, logits) and outputs.logits.dtype == np.float32
    assert outputs.probabilities is None and outputs.classes is None and outputs.labels is None


def test_probabilities_level_answer() -> None:
    probabilities = np.array([[0.5, 0.25, 0.25, 0.0, 0.0], [0.2] * 5], dtype=np.float32)
    outputs = _outputs(LogitsResponse(probabilities=WireTensor.from_numpy(probabilities)))
    assert outputs.level is AccessLevel.PROBABILITIES
    assert np.array_equal(outputs.probabilities, probabilities) and outputs.logits is None


def test_top_k_level_answer() -> None:
    probabilities = np.array([[0.5, 0.3], [0.6, 0.1]], dtype=np.float32)
    reply = LogitsResponse(probabilities=WireTensor.from_numpy(probabilities), classes=[[3, 0], [1, 4]])
    outputs = _outputs(reply)
    assert outputs.level is AccessLevel.TOP_K
    assert outputs.classes.dtype == np.int64 and outputs.classes.tolist() == [[3, 0], [1, 4]]
    assert np.array_equal(outputs.probabilities, probabilities)


def test_label_level_answer() -> None:
    outputs = _outputs(LogitsResponse(labels=[4, 1]))
    assert outputs.level is AccessLevel.LABEL and outputs.labels.tolist() == [4, 1]
    assert outputs.labels.dtype == np.int64 and outputs.logits is None


def test_an_answer_without_any_field_or_with_ragged_classes_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="LogitsResponse"):
        _outputs(LogitsResponse())
    ragged = {
        "probabilities": WireTensor.from_numpy(np.ones((2, 2), np.float32)).model_dump(),
        "classes": [[1, 2], [3]],
    }
    with (
        make_client(FakeServer(msgpack_reply(ragged))) as sdk,
        pytest.raises(ProtocolError, match="LogitsResponse"),
    ):
        sdk.outputs(TASK_ID, images_for(2))


@pytest.mark.parametrize(
    ("reply", "level"),
    [
        (LogitsResponse(labels=[0, 1]), "label"),
        (
            LogitsResponse(probabilities=WireTensor.from_numpy(np.ones((2, NUM_CLASSES), np.float32))),
            "probabilities",
        ),
    ],
)
def test_logits_names_the_level_of_an_answer_without_logits(reply: LogitsResponse, level: str) -> None:
    with make_client(FakeServer(msgpack_reply(reply))) as sdk:
        with pytest.raises(ProtocolError, match=f"access level {level}; use outputs"):
            sdk.logits(TASK_ID, images_for(2))
        assert sdk.meter.images == 2  # the answer came and was charged: it is counted


def test_logits_and_outputs_send_the_same_request() -> None:
    server = FakeServer(msgpack_reply(LogitsResponse(logits=WireTensor.from_numpy(logits_for(2)))))
    with make_client(server) as sdk:
        from_logits = sdk.logits(TASK_ID, images_for(2), "fp32")
        from_outputs = sdk.outputs(TASK_ID, images_for(2), "fp32")
    first, second = server.requests
    assert first.content == second.content and first.url.path == Routes.LOGITS.format(task_id=TASK_ID)
    assert np.array_equal(from_logits, from_outputs.logits)


def test_register_task_sends_no_access_at_the_default_level() -> None:
    server = FakeServer(json_reply(task_model(["cat", "dog"])))
    with make_client(server) as sdk:
        sdk.register_task(["cat", "dog"])
        sdk.register_task(["cat", "dog"], access=Access())
    for request in server.requests:  # a server older than protocol 1.6 takes these bodies
        assert json.loads(request.content) == {
            "class_names": ["cat", "dog"],
            "templates": ["a photo of a {}."],
        }


def test_register_task_sends_the_access() -> None:
    access = Access(level=AccessLevel.TOP_K, k=3, decimals=2, noise_std=0.5)
    answer = task_model(["cat", "dog"]).model_copy(update={"access": access})
    server = FakeServer(json_reply(answer))
    with make_client(server) as sdk:
        task = sdk.register_task(["cat", "dog"], access=access)
    assert json.loads(server.requests[0].content)["access"] == {
        "level": "top-k", "k": 3, "decimals": 2, "noise_std": 0.5
    }  # fmt: skip
    assert task.access == access


def test_an_older_servers_task_is_at_level_logits() -> None:
    older = {k: v for k, v in task_model().model_dump(mode="json").items() if k != "access"}
    with make_client(FakeServer(raw_reply(200, json.dumps(older).encode(), "application/json"))) as sdk:
        assert sdk.get_task(TASK_ID).access == Access()
    assert TaskResponse.model_validate(older).access.level is AccessLevel.LOGITS


def test_access_denied_is_its_own_error_and_not_retried() -> None:
    server = FakeServer(error_reply(403, ErrorCode.ACCESS_DENIED, "level loss does not answer /logits"))
    with make_client(server) as sdk, pytest.raises(AccessDeniedError) as info:
        sdk.outputs(TASK_ID, images_for(2))
    assert (info.value.status, info.value.code) == (403, "access_denied")
    assert len(server.requests) == 1 and sdk.meter.requests == 0


def test_concat_outputs_joins_batches_field_by_field() -> None:
    first = Outputs(probabilities=np.ones((2, 3)), classes=np.zeros((2, 3), np.int64))
    second = Outputs(probabilities=np.zeros((1, 3)), classes=np.ones((1, 3), np.int64))
    joined = concat_outputs([first, second])
    assert joined.probabilities.shape == (3, 3) and joined.classes[:, 0].tolist() == [0, 0, 1]
    assert joined.logits is None and joined.labels is None
    with pytest.raises(ValueError, match="logits is present in some"):
        concat_outputs([Outputs(labels=np.zeros(1, np.int64)), Outputs(logits=np.zeros((1, 2)))])
