"""The loss oracle over HTTP: candidate parameter vectors -> prompted batches -> server losses.

One at a time (``in_flight`` 1), all candidates of an optimiser step are packed into as few requests
as the server's limits (images per request, bytes per request) allow. With ``in_flight`` > 1 a request
holds at most one candidate's batch, whatever the server's limit, so that up to ``in_flight`` requests
are outstanding while the next candidate's images are built: a step that would fit in one request
still gives the client and the server work to overlap. The images, their order and the assembled losses
are the same either way; a server that pads its forwards to fixed sizes (its default) answers a row
with the same bits whatever it was sent with, so training is bit-identical either way.

The task's access level (``shared.access``) decides where the losses come from: at ``logits`` and
``loss`` the server's ``/loss`` computes them (as always); at ``probabilities``, ``top-k`` and ``label``
the logits route answers what the level reveals and ``client.training.levels`` computes them (cross-
entropy only: the focal loss needs the logits). The requests carry the same images either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from client._outputs import Outputs, concat_outputs
from client._sdk import BlackVIPClient, LossResult
from client.training import levels
from client.training.config import ConfigError
from client.training.pipeline import ordered_map
from client.training.plan import images_per_request
from client.training.prompters import Prompter
from client.training.zo import Evaluation, LossOracle
from shared.access import LEVELS_WITH_LOSS, Access, AccessLevel
from shared.protocol import InfoResponse, LossKind, RequestPrecision

__all__ = ["RemoteLoss", "evaluation_precision", "to_wire"]


def evaluation_precision(info: InfoResponse) -> RequestPrecision | None:
    """fp32 where the server takes the field (protocol 1.5+): the seed trains under autocast and tests
    in fp32, so a server started with ``--precision fp16`` trains at fp16 and evaluates at fp32. None
    (the serving precision) for an older server."""
    accepted = info.serving.request_precisions if info.serving is not None else None
    return RequestPrecision.FP32 if accepted and RequestPrecision.FP32.value in accepted else None


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
        in_flight: int = 1,
        *,
        access: Access | None = None,
        num_classes: int | None = None,
    ) -> None:
        """``access``: the task's (default: level logits); ``num_classes``: its C, needed at top-k."""
        self.access = access or Access()
        self.num_classes = num_classes
        _check_level(self.access, loss_kind, num_classes)
        self.floor = levels.probability_floor(self.access.decimals)
        self.api, self.task_id = api, task_id
        self.loss_kind, self.focal_gamma, self.wire_dtype = loss_kind, focal_gamma, wire_dtype
        self.images_per_request = images_per_request(
            info.image_size, wire_dtype, info.max_batch_images, info.max_request_bytes
        )
        self.in_flight = in_flight
        self.eval_precision = evaluation_precision(info)  # for ``logits`` (evaluation) only
        self._pool = ThreadPoolExecutor(in_flight, "oracle") if in_flight > 1 else None

    def request_images(self, batch: int) -> int:
        """Images per training request for candidates of ``batch`` images (see the module's docstring)."""
        return self.images_per_request if self.in_flight <= 1 else min(self.images_per_request, batch)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def oracle(self, prompter: Prompter, pixels: torch.Tensor, labels: torch.Tensor) -> LossOracle:
        """An oracle for one batch: pixels (N, 3, S, S) float in [0, 1], labels (N,). Each candidate
        vector is applied as it is (``Prompter.apply_vector``); the prompter's parameters do not move."""
        with torch.no_grad():
            prepared = prompter.prepare(pixels)

        def evaluate(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
            if not all(bool(torch.isfinite(vector).all()) for vector in candidates):
                raise FloatingPointError("a candidate holds NaN/Inf values (the parameters overflowed)")
            batches = (_prompted(prompter, vector, pixels, prepared) for vector in candidates)
            losses, correct = self.query_stream(_requests(batches, labels, self.request_images(len(labels))))
            n = len(labels)
            return [
                Evaluation(
                    float(losses[i * n : (i + 1) * n].mean()), float(correct[i * n : (i + 1) * n].mean())
                )
                for i in range(len(candidates))
            ]

        return evaluate

    def logits(self, images: torch.Tensor) -> np.ndarray:
        """Logits (N, C) for any number of images, split to fit the limits (evaluation only: asked at
        ``eval_precision``, fp32 where the server offers it; training losses stay at its --precision)."""
        chunks = [
            self.api.logits(
                self.task_id,
                to_wire(images[start : start + self.images_per_request], self.wire_dtype),
                self.eval_precision,
            )
            for start in range(0, len(images), self.images_per_request)
        ]
        return np.concatenate(chunks)

    def outputs(self, images: torch.Tensor) -> Outputs:
        """What the task's level reveals of any number of images, split to fit the limits (evaluation
        only, at ``eval_precision`` as ``logits``)."""
        step = self.images_per_request
        return concat_outputs(
            [
                self.api.outputs(
                    self.task_id, to_wire(images[s : s + step], self.wire_dtype), self.eval_precision
                )
                for s in range(0, len(images), step)
            ]
        )

    def eval_losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Cross-entropy losses (N,) and correctness from the server's ``/loss`` at ``eval_precision``
        (evaluation at level ``loss``, whose logits route is refused)."""
        step, answers = self.images_per_request, []
        for s in range(0, len(images), step):
            wire = to_wire(images[s : s + step], self.wire_dtype)
            answers.append(
                self.api.loss(self.task_id, wire, labels[s : s + step].numpy(), precision=self.eval_precision)
            )
        losses = np.concatenate([answer.losses.astype(np.float64) for answer in answers])
        return losses, np.concatenate([answer.correct for answer in answers])

    def query(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-image losses and correctness for any number of images, split to fit the limits."""
        step = self.images_per_request
        starts = range(0, len(images), step)
        return self.query_stream((images[s : s + step], labels[s : s + step]) for s in starts)

    def query_stream(
        self, requests: Iterator[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Losses and correctness, in order, for requests of (images, labels) produced lazily."""
        answers = list(ordered_map(self._loss, requests, self.in_flight, self._pool))
        losses = [answer.losses.astype(np.float64) for answer in answers]
        return np.concatenate(losses), np.concatenate([answer.correct for answer in answers])

    def _loss(self, request: tuple[torch.Tensor, torch.Tensor]) -> LossResult:
        images, labels = request
        if self.access.level in LEVELS_WITH_LOSS:
            return self.api.loss(
                self.task_id,
                to_wire(images, self.wire_dtype),
                labels.numpy(),
                self.loss_kind,
                self.focal_gamma,
            )
        outputs = self.api.outputs(self.task_id, to_wire(images, self.wire_dtype))
        truth = labels.numpy()
        return LossResult(
            losses=levels.losses(outputs, truth, self.num_classes, self.floor),
            correct=levels.correct(outputs, truth),
        )


def _check_level(access: Access, loss_kind: LossKind, num_classes: int | None) -> None:
    """Refuse, before any query, what the client cannot compute at the task's level."""
    if access.level in LEVELS_WITH_LOSS:
        return
    if LossKind(loss_kind) is not LossKind.CROSS_ENTROPY:
        raise ConfigError(
            f"the {LossKind(loss_kind).value} loss is computed by the server's /loss, which access level "
            f"{access.level.value} refuses; at that level the client computes cross-entropy only"
        )
    if access.level is AccessLevel.TOP_K and num_classes is None:
        raise ConfigError("access level top-k needs the task's number of classes (num_classes)")


def _prompted(
    prompter: Prompter, vector: torch.Tensor, pixels: torch.Tensor, prepared: object
) -> torch.Tensor:
    with torch.no_grad():
        images = prompter.apply_vector(vector, pixels, prepared)  # (N, 3, S, S)
    if not bool(torch.isfinite(images).all()):  # the server would refuse them: a diverged prompt
        raise FloatingPointError("the prompt holds NaN/Inf values (the parameters overflowed)")
    return images


def _requests(
    batches: Iterator[torch.Tensor], labels: torch.Tensor, per_request: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The candidates' images, one candidate after another, cut into requests of ``per_request``
    images: a request may span two candidates, exactly as if all were concatenated first."""
    held: list[torch.Tensor] = []
    held_labels: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        held.append(batch)
        held_labels.append(labels)
        count += len(batch)
        while count >= per_request:
            images, request_labels = torch.cat(held), torch.cat(held_labels)
            yield images[:per_request], request_labels[:per_request]
            held, held_labels = [images[per_request:]], [request_labels[per_request:]]
            count -= per_request
    if count:
        yield torch.cat(held), torch.cat(held_labels)
