"""Evaluation asks fp32 forwards where the server offers the choice (the seed trains under autocast and
tests in fp32); training losses keep the server's --precision, and an older server gets no field."""

from __future__ import annotations

import numpy as np
import torch

from client._sdk import _dump
from client.training.objective import RemoteLoss, evaluation_precision
from shared.protocol import LogitsRequest, RequestPrecision, ServingInfo, WireTensor
from tests.client.training.test_coordinator_prompters import _info


class RecordingApi:
    """The SDK's logits/loss, recording the precision each call asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def logits(self, task_id: str, images: np.ndarray, precision: object = None) -> np.ndarray:
        self.asked.append(("logits", precision))
        return np.zeros((len(images), 2), dtype=np.float32)

    def loss(self, task_id, images, labels, loss, gamma, precision: object = None):  # noqa: ANN001
        raise AssertionError("not used here")


def _serving(precisions: list[str] | None) -> ServingInfo:
    return ServingInfo(device="cuda:0", precision="fp16", channels_last=True, warmup_s=0.1, batcher=True,
                       max_forward_batch=64, max_queue_delay_ms=2.0, max_queue_images=4096,
                       batch_padding="fixed", forward_shapes=None, request_precisions=precisions)  # fmt: skip


def test_evaluation_logits_ask_fp32_where_the_server_advertises_it() -> None:
    info = _info(16, 2**24, image_size=8).model_copy(update={"serving": _serving(["serving", "fp32"])})
    api = RecordingApi()
    remote = RemoteLoss(api, info, "task-1")  # type: ignore[arg-type]
    remote.logits(torch.rand(20, 3, 8, 8))
    assert api.asked == [("logits", RequestPrecision.FP32), ("logits", RequestPrecision.FP32)]


def test_an_older_server_gets_no_precision_field() -> None:
    assert evaluation_precision(_info(16, 2**24)) is None  # no serving block
    older = _info(16, 2**24).model_copy(update={"serving": _serving(None)})
    assert evaluation_precision(older) is None
    request = LogitsRequest(images=WireTensor.from_numpy(np.zeros((1, 3, 2, 2), np.float32)))
    assert "precision" not in _dump(request)
    fp32 = request.model_copy(update={"precision": RequestPrecision.FP32})
    assert _dump(fp32)["precision"] == "fp32"
