"""A request's ``precision`` (protocol 1.5): /v1/info advertises what it may ask, both values are
accepted on logits and loss, anything else is a 422, and on CPU (fp32 serving) both are the same
forwards. Which lane each precision takes is checked on ``ClipBackend.lane`` (a CUDA server's fp16 is
not reachable here)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from server.serving.clip_model import ClipBackend
from shared.codec import unpack
from shared.protocol import InfoResponse, Routes
from tests.helpers import random_images
from tests.server.api.test_api import ALICE, error_of, images_payload, post_msgpack, task_id  # noqa: F401


def test_info_advertises_the_request_precisions_and_serves_fp32_on_cpu(api) -> None:
    info = InfoResponse.model_validate(api.get(Routes.INFO, headers=ALICE).json())
    assert info.serving is not None
    assert info.serving.request_precisions == ["serving", "fp32"]
    assert info.serving.precision == "fp32"  # CPU: --precision is for CUDA


@pytest.mark.parametrize("route", [Routes.LOGITS, Routes.LOSS])
def test_both_precisions_are_accepted_and_give_the_same_answer_on_cpu(api, task_id: str, route: str) -> None:  # noqa: F811
    images = random_images(3, "float32", seed=7)
    extra = {"labels": [0, 1, 2]} if route == Routes.LOSS else {}
    answers = []
    for precision in (None, "serving", "fp32"):
        payload = images_payload(images, **extra, **({"precision": precision} if precision else {}))
        response = post_msgpack(api, route.format(task_id=task_id), payload)
        assert response.status_code == 200, response.text
        answers.append(unpack(response.content))
    field = "losses" if route == Routes.LOSS else "logits"
    first = np.frombuffer(answers[0][field]["data"], dtype="<f4")
    for answer in answers[1:]:
        assert np.array_equal(np.frombuffer(answer[field]["data"], dtype="<f4"), first)


@pytest.mark.parametrize("bad", ["fp16", "FP32", "", 32])
def test_an_unknown_precision_is_a_422_before_any_forward(api, task_id: str, bad: object) -> None:  # noqa: F811
    payload = images_payload(random_images(1, "float32"), precision=bad)
    status, code, message = error_of(post_msgpack(api, Routes.LOGITS.format(task_id=task_id), payload))
    assert (status, code) == (422, "validation_error") and "precision" in message


def test_lanes_fp32_requests_get_float32_forwards_only_where_serving_is_not() -> None:
    half = SimpleNamespace(precision="fp16")
    assert ClipBackend.lane(half, "serving") is None  # type: ignore[arg-type]
    assert ClipBackend.lane(half, "fp32") == "fp32"  # type: ignore[arg-type]
    full = SimpleNamespace(precision="fp32")
    assert ClipBackend.lane(full, "fp32") is None  # type: ignore[arg-type]  # same forwards: shared
    with pytest.raises(ValueError, match="unknown request precision"):
        ClipBackend.lane(half, "fp16")  # type: ignore[arg-type]
