"""The loss oracle over HTTP: candidate parameter vectors -> prompted batches -> server losses.

All candidates of one optimiser step are packed into as few requests as the server's limits
(images per request, bytes per request) allow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from client._sdk import BlackVIPClient
from client.training.plan import images_per_request
from client.training.prompters import Prompter
from client.training.zo import Evaluation, LossOracle
from shared.protocol import InfoResponse, LossKind

__all__ = ["RemoteLoss", "to_wire"]


def to_wire(pixels: torch.Tensor, dtype: str) -> np.ndarray:
    """[0, 1] float pixels (N, 3, S, S) as the array that goes on the wire."""
    if dtype == "uint8":
        return (pixels * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return pixels.detach().numpy().astype(dtype, copy=False)


class RemoteLoss:
    def __init__(
        self,
        api: BlackVIPClient,
        info: InfoResponse,
        task_id: str,
        loss_kind: LossKind = LossKind.CROSS_ENTROPY,
        focal_gamma: float = 2.0,
        wire_dtype: str = "float32",
    ) -> None:
        self.api, self.task_id = api, task_id
        self.loss_kind, self.focal_gamma, self.wire_dtype = loss_kind, focal_gamma, wire_dtype
        self.images_per_request = images_per_request(
            info.image_size, wire_dtype, info.max_batch_images, info.max_request_bytes
        )

    def oracle(self, prompter: Prompter, pixels: torch.Tensor, labels: torch.Tensor) -> LossOracle:
        """An oracle for one batch: pixels (N, 3, S, S) float in [0, 1], labels (N,). Each candidate
        vector is applied as it is (``Prompter.apply_vector``); the prompter's parameters do not move."""
        with torch.no_grad():
            prepared = prompter.prepare(pixels)

        def evaluate(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
            with torch.no_grad():
                batches = [prompter.apply_vector(vector, pixels, prepared) for vector in candidates]
            images = torch.cat(batches)  # (P * N, 3, S, S)
            if not bool(torch.isfinite(images).all()):  # the server would refuse them: a diverged prompt
                raise FloatingPointError("the prompt holds NaN/Inf values (the parameters overflowed)")
            losses, correct = self.query(images, labels.repeat(len(candidates)))
            n = len(labels)
            return [
                Evaluation(
                    float(losses[i * n : (i + 1) * n].mean()), float(correct[i * n : (i + 1) * n].mean())
                )
                for i in range(len(candidates))
            ]

        return evaluate

    def logits(self, images: torch.Tensor) -> np.ndarray:
        """Logits (N, C) for any number of images, split to fit the limits (evaluation only)."""
        chunks = [
            self.api.logits(
                self.task_id, to_wire(images[start : start + self.images_per_request], self.wire_dtype)
            )
            for start in range(0, len(images), self.images_per_request)
        ]
        return np.concatenate(chunks)

    def query(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-image losses and correctness for any number of images, split to fit the limits."""
        losses, correct = [], []
        for start in range(0, len(images), self.images_per_request):
            stop = start + self.images_per_request
            result = self.api.loss(
                self.task_id,
                to_wire(images[start:stop], self.wire_dtype),
                labels[start:stop].numpy(),
                self.loss_kind,
                self.focal_gamma,
            )
            losses.append(result.losses.astype(np.float64))
            correct.append(result.correct)
        return np.concatenate(losses), np.concatenate(correct)
