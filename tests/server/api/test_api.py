"""The real app on the real tiny open_clip model, through FastAPI's TestClient: every endpoint and
every error status, and the ledger's treatment of each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.codec import pack, unpack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    REQUEST_ID_HEADER,
    ErrorBody,
    InfoResponse,
    LogitsResponse,
    LossResponse,
    Routes,
    UsageResponse,
    WireTensor,
)
from tests.helpers import IMAGE_SIZE, KEYS, random_images

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants, as published with CLIP
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

ALICE = {"Authorization": f"Bearer {KEYS[0]}"}
BOB = {"Authorization": f"Bearer {KEYS[1]}"}
CLASSES = ["zero", "one", "two", "three"]


def post_msgpack(api, path: str, payload: object, headers: dict[str, str] = ALICE):
    return api.post(path, content=pack(payload), headers={**headers, "Content-Type": MSGPACK_CONTENT_TYPE})


def images_payload(images: np.ndarray, **extra: object) -> dict[str, object]:
    return {"images": WireTensor.from_numpy(images).model_dump(), **extra}


def error_of(response) -> tuple[int, str, str]:
    body = ErrorBody.model_validate(response.json())  # the one error shape, whatever the status
    return response.status_code, body.error.code.value, body.error.message


def usage(api, headers: dict[str, str] = ALICE) -> UsageResponse:
    return UsageResponse.model_validate(api.get(Routes.USAGE, headers=headers).json())


@pytest.fixture(scope="module")
def task_id(api) -> str:
    response = api.post(
        Routes.TASKS, json={"class_names": CLASSES, "templates": ["a photo of {}.", "{}"]}, headers=ALICE
    )
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def test_health_and_info_describe_the_model_and_nothing_of_its_weights(api) -> None:
    assert api.get(Routes.HEALTH).json()["status"] == "ok"
    info = InfoResponse.model_validate(api.get(Routes.INFO, headers=ALICE).json())
    assert (info.model, info.pretrained, info.image_size) == ("tiny-vit", "random-init", IMAGE_SIZE)
    assert info.accepted_dtypes == ["float32", "float16", "uint8"]
    assert info.max_batch_images == 16 and info.auth_required
    assert info.mean == OPENAI_DATASET_MEAN and info.std == OPENAI_DATASET_STD  # CLIP's, from open_clip
    text = api.get(Routes.INFO, headers=ALICE).text
    assert "state_dict" not in text and "weight" not in text


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_logits_for_every_dtype_match_the_same_pixels_in_float32(api, task_id: str, dtype: str) -> None:
    images = random_images(3, dtype, seed=1)
    response = post_msgpack(api, Routes.LOGITS.format(task_id=task_id), images_payload(images))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MSGPACK_CONTENT_TYPE
    logits = LogitsResponse.model_validate(unpack(response.content)).logits.to_numpy()
    assert logits.shape == (3, len(CLASSES)) and logits.dtype == np.float32
    as_float = images.astype(np.float32) / (255.0 if dtype == "uint8" else 1.0)
    reference = post_msgpack(api, Routes.LOGITS.format(task_id=task_id), images_payload(as_float))
    expected = LogitsResponse.model_validate(unpack(reference.content)).logits.to_numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_loss_is_computed_from_the_logits(api, task_id: str, kind: str) -> None:
    images, labels = random_images(5, "float32", seed=2), [0, 1, 2, 3, 1]
    path = Routes.LOGITS.format(task_id=task_id)
    logits = LogitsResponse.model_validate(unpack(post_msgpack(api, path, images_payload(images)).content))
    logits = logits.logits.to_numpy().astype(np.float64)
    response = post_msgpack(
        api,
        Routes.LOSS.format(task_id=task_id),
        images_payload(images, labels=labels, loss=kind, focal_gamma=2.0),
    )
    assert response.status_code == 200, response.text
    result = LossResponse.model_validate(unpack(response.content))
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -log_p[np.arange(5), labels]
    expected = ce if kind == "ce" else (1 - np.exp(-ce)) ** 2 * ce
    np.testing.assert_allclose(result.losses.to_numpy(), expected, rtol=1e-4, atol=1e-5)
    assert result.correct == list(logits.argmax(1) == np.array(labels))


def test_registering_the_same_task_twice_gives_the_same_id(api, task_id: str) -> None:
    again = api.post(
        Routes.TASKS, json={"class_names": CLASSES, "templates": ["a photo of {}.", "{}"]}, headers=ALICE
    )
    assert again.json()["task_id"] == task_id
    assert api.get(Routes.TASK.format(task_id=task_id), headers=ALICE).json()["num_classes"] == 4


def test_a_key_sees_only_its_own_tasks(api, task_id: str) -> None:
    for response in (
        api.get(Routes.TASK.format(task_id=task_id), headers=BOB),
        post_msgpack(
            api, Routes.LOGITS.format(task_id=task_id), images_payload(random_images(1, "uint8")), headers=BOB
        ),
    ):
        assert error_of(response)[:2] == (404, "not_found")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_missing_or_unknown_key_is_401(api, headers: dict[str, str]) -> None:
    assert error_of(api.get(Routes.INFO, headers=headers))[:2] == (401, "unauthorized")
    assert error_of(api.get(Routes.USAGE, headers=headers))[:2] == (401, "unauthorized")


def test_wrong_content_type_is_415(api, task_id: str) -> None:
    response = api.post(Routes.LOGITS.format(task_id=task_id), json={"images": []}, headers=ALICE)
    status, code, message = error_of(response)
    assert (status, code) == (415, "unsupported_media_type") and MSGPACK_CONTENT_TYPE in message
    tasks = api.post(
        Routes.TASKS,
        content=pack({"class_names": CLASSES}),
        headers={**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE},
    )
    assert error_of(tasks)[:2] == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("images", "code", "fragment"),
    [
        (random_images(2, "float32", size=16), "invalid_tensor", "(N, 3, 32, 32)"),
        (np.zeros((2, 1, 32, 32), np.float32), "invalid_tensor", "received (2, 1, 32, 32)"),
        (np.zeros((3, 32, 32), np.float32), "invalid_tensor", "received (3, 32, 32)"),
        (np.zeros((0, 3, 32, 32), np.float32), "invalid_tensor", "N >= 1"),
        (np.zeros((2, 3, 32, 32), np.int64), "invalid_tensor", "'int64'"),
        (np.full((1, 3, 32, 32), np.nan, np.float32), "invalid_values", "NaN or Inf"),
        (np.full((1, 3, 32, 32), np.inf, np.float16), "invalid_values", "NaN or Inf"),
        (np.full((1, 3, 32, 32), 1.5, np.float32), "invalid_values", "[0, 1]"),
        (np.full((1, 3, 32, 32), -0.1, np.float32), "invalid_values", "[0, 1]"),
    ],
)
def test_bad_images_are_422_naming_the_problem(api, task_id, images, code, fragment) -> None:
    response = post_msgpack(api, Routes.LOGITS.format(task_id=task_id), images_payload(images))
    status, got_code, message = error_of(response)
    assert (status, got_code) == (422, code)
    assert fragment in message


def test_bad_labels_and_fields_are_422(api, task_id: str) -> None:
    path = Routes.LOSS.format(task_id=task_id)
    images = images_payload(random_images(2, "uint8"))
    cases = [
        ({**images, "labels": [0]}, "invalid_labels", "1 labels for 2 images"),
        ({**images, "labels": [0, 4]}, "invalid_labels", "[0, 3]"),
        ({**images, "labels": [0, -1]}, "validation_error", "labels"),
        ({**images, "labels": [0, 1], "loss": "hinge"}, "validation_error", "loss"),
        ({**images, "labels": [0, 1], "extra": 1}, "validation_error", "extra"),
        ({"labels": [0, 1]}, "validation_error", "images"),
    ]
    for payload, code, fragment in cases:
        status, got_code, message = error_of(post_msgpack(api, path, payload))
        assert (status, got_code) == (422, code), payload
        assert fragment in message, message


def test_tensor_with_wrong_byte_count_is_422_and_garbage_is_400(api, task_id: str) -> None:
    path = Routes.LOGITS.format(task_id=task_id)
    wire = WireTensor.from_numpy(random_images(2, "uint8")).model_dump()
    wire["data"] = wire["data"][:-7]
    status, code, message = error_of(post_msgpack(api, path, {"images": wire}))
    assert (status, code) == (422, "invalid_tensor") and "6137 bytes" in message
    garbage = api.post(path, content=b"\xc1\xff\x00", headers={**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE})
    assert error_of(garbage)[:2] == (400, "malformed_body")
    not_a_map = post_msgpack(api, path, [1, 2, 3])
    assert error_of(not_a_map)[:2] == (400, "malformed_body")


def test_invalid_task_definitions_are_422(api) -> None:
    for body in (
        {"class_names": []},
        {"class_names": ["a"], "templates": ["no placeholder"]},
        {"templates": ["{}"]},
    ):
        assert error_of(api.post(Routes.TASKS, json=body, headers=ALICE))[:2] == (422, "validation_error")


def test_unknown_task_and_route_are_404(api) -> None:
    response = post_msgpack(
        api, Routes.LOGITS.format(task_id="task-nope"), images_payload(random_images(1, "uint8"))
    )
    assert error_of(response)[:2] == (404, "not_found")
    assert error_of(api.get("/v1/nothing-here", headers=ALICE))[:2] == (404, "not_found")


def test_too_many_images_and_too_many_bytes_are_413(api, task_id: str) -> None:
    path = Routes.LOGITS.format(task_id=task_id)
    status, code, message = error_of(post_msgpack(api, path, images_payload(random_images(17, "uint8"))))
    assert (status, code) == (413, "too_many_images") and "at most 16" in message
    big = pack(images_payload(random_images(30, "float32")))  # 368 KB > 300 KB limit
    declared = api.post(path, content=big, headers={**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE})
    assert error_of(declared)[:2] == (413, "body_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = api.post(path, content=chunks(), headers={**ALICE, "Content-Type": MSGPACK_CONTENT_TYPE})
    assert "content-length" not in streamed.request.headers
    assert error_of(streamed)[:2] == (413, "body_too_large")


def test_rejections_are_recorded_but_never_charged_and_serving_goes_on(api, task_id: str) -> None:
    before = usage(api)
    path = Routes.LOGITS.format(task_id=task_id)
    assert (
        post_msgpack(api, path, images_payload(np.full((1, 3, 32, 32), 2.0, np.float32))).status_code == 422
    )
    assert post_msgpack(api, path, images_payload(random_images(17, "uint8"))).status_code == 413
    after_rejects = usage(api)
    assert after_rejects.total == before.total
    assert after_rejects.rejected_requests == before.rejected_requests + 2
    ok = post_msgpack(api, path, images_payload(random_images(4, "uint8")))
    assert ok.status_code == 200
    after_ok = usage(api)
    assert after_ok.total.requests == before.total.requests + 1
    assert after_ok.total.images == before.total.images + 4
    assert math.isclose(after_ok.total.cost, before.total.cost + 4 / 1000 * api.settings.price_per_1k_images)


def test_a_retried_request_id_is_charged_once(api, task_id: str) -> None:
    path = Routes.LOGITS.format(task_id=task_id)
    before = usage(api).total.images
    headers = {**ALICE, REQUEST_ID_HEADER: "retry-me-1"}
    first = post_msgpack(api, path, images_payload(random_images(2, "uint8")), headers=headers)
    second = post_msgpack(api, path, images_payload(random_images(2, "uint8")), headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert usage(api).total.images == before + 2


def test_usage_is_per_key_with_endpoint_breakdown(api, task_id: str) -> None:
    images = random_images(2, "uint8")
    assert post_msgpack(api, Routes.LOGITS.format(task_id=task_id), images_payload(images)).status_code == 200
    loss = post_msgpack(api, Routes.LOSS.format(task_id=task_id), images_payload(images, labels=[0, 1]))
    assert loss.status_code == 200
    alice, bob = usage(api), usage(api, BOB)
    assert alice.key_id != bob.key_id
    assert {"tasks", "logits", "loss"} <= set(alice.by_endpoint)
    assert sum(c.images for c in alice.by_endpoint.values()) == alice.total.images
    assert alice.total.batch_passes >= alice.by_endpoint["logits"].requests
    assert bob.total.images == 0


def test_logits_equal_open_clip_computed_independently(api) -> None:
    """The same tiny model built here with open_clip's own API (seed 0, as the server's --seed):
    logits = exp(logit_scale) * cosine(image features of the CLIP-normalised image, text features)."""
    import open_clip
    import torch

    from server.serving.clip_model import MODEL_CONFIG_DIR

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-vit", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("tiny-vit")
    names = ["red", "green", "blue"]
    task = api.post(Routes.TASKS, json={"class_names": names, "templates": ["a {} thing"]}, headers=ALICE)
    images = random_images(5, "float32", seed=9)
    response = post_msgpack(api, Routes.LOGITS.format(task_id=task.json()["task_id"]), images_payload(images))
    served = LogitsResponse.model_validate(unpack(response.content)).logits.to_numpy()

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image_features, text_features, scale = model(
            (torch.from_numpy(images) - mean) / std, tokenizer([f"a {name} thing" for name in names])
        )  # open_clip's forward returns normalised features and exp(logit_scale)
        expected = (scale * image_features @ text_features.T).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
