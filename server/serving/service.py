"""What each charged endpoint does, apart from HTTP: tasks, their text features, and model calls.

Methods here block (model forwards, ledger reads) and are called from a worker thread. Each returns
the ``Work`` that ``Idempotency.serve`` charges exactly once (``server.serving.idempotency``).
"""

from __future__ import annotations

import hashlib
import json
from functools import partial

import numpy as np
import torch

from server.errors import APIError, echo
from server.ledger import Answer, Ledger, QuotaState, StoredTask, task_refusal
from server.metrics import ServerMetrics
from server.serving.access import blur_logits, reveal, round_scores
from server.serving.access_policy import refuse_key_level
from server.serving.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from server.serving.clip_model import ClipBackend, per_image_loss
from server.serving.forward_shapes import forward_shapes
from server.serving.idempotency import Idempotency, Work, quota_error, task_limit_error
from server.serving.known_tasks import KnownTasks
from server.serving.tasks import TextFeatureCache
from server.settings import ServerSettings
from shared.access import Access
from shared.codec import OUTPUT_DTYPE, pack
from shared.protocol import MSGPACK_CONTENT_TYPE, ErrorCode, TaskRequest, TaskResponse, cost_of

__all__ = ["QueryService", "task_response", "wire_view"]

QUEUE_RETRY_AFTER_S = 1.0
KNOWN_TASKS_BYTES = 32 * 2**20  # tasks found in the ledger, kept for the hot routes (KnownTasks)


class QueryService:
    def __init__(
        self,
        settings: ServerSettings,
        backend: ClipBackend,
        ledger: Ledger,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.ledger = ledger
        self.observe_forward = metrics.forward if metrics is not None else None
        self.idempotency = Idempotency(settings, ledger, metrics.charged if metrics is not None else None)
        self.features = TextFeatureCache(int(settings.text_cache_mb * 2**20))
        self.known_tasks = KnownTasks(KNOWN_TASKS_BYTES)
        shape_seconds: dict[int, float] = {}  # measured while the shapes are checked
        self.forward_shapes = forward_shapes(settings, backend, shape_seconds) if settings.batcher else None
        self.batcher = (
            DynamicBatcher(
                backend.image_features,
                max_batch=settings.max_forward_batch,
                max_delay_s=settings.max_queue_delay_ms / 1000.0,
                max_queue_images=settings.max_queue_images,
                shapes=self.forward_shapes,
                name=f"batcher-{backend.device}",
                callers=lambda: self.idempotency.active,
                observe=self.observe_forward,
                lanes={"fp32": partial(backend.image_features, lane="fp32")},
                shape_seconds=shape_seconds,
            )
            if settings.batcher
            else None
        )

    def close(self, timeout: float) -> bool:
        """After ``idempotency.wait_idle``: stop the batcher's worker (nothing is queued any more)."""
        return self.batcher.close(timeout) if self.batcher is not None else True

    def register_task(self, request: TaskRequest, key_id: str) -> Work:
        """A new task, or a known one whose features were evicted, is charged for its texts; a known,
        cached one is free. Limits and quotas are checked before any text is encoded."""
        task_id = self._task_id(key_id, request)
        task = StoredTask(task_id, key_id, list(request.class_names), list(request.templates), request.access)
        quota = self.ledger.quota(key_id)
        refuse_key_level(task.access, quota.levels)  # the server's levels: checked by the route
        known = self.ledger.load_task(task_id, key_id) is not None
        if not known:
            self._refuse_new_task(task)
        self._refuse_texts(key_id, task, images=0, new=not known, quota=quota)
        _, computed = self.features.get(task_id, lambda: self._encode(task))
        response = task_response(task)
        return Work(
            answer=Answer(response.model_dump_json().encode(), "application/json"),
            task_id=task_id,
            texts=_texts(task) if computed or not known else 0,
            new_task=None if known else task,
        )

    def _refuse_new_task(self, task: StoredTask) -> None:
        usage = self.ledger.task_store_usage(task.key_id)
        settings = self.settings
        refusal = task_refusal(usage, task, settings.max_tasks_per_key, settings.max_task_store_bytes_per_key)
        if refusal is not None:  # the charge checks again in its transaction
            raise task_limit_error(refusal)

    def _refuse_texts(
        self, key_id: str, task: StoredTask, images: int, new: bool, quota: QuotaState | None = None
    ) -> None:
        """A cheap early refusal before any forward: the images, at the task level's price, and the
        texts unless they are cached (a new task's texts always count). The charge checks the quota
        again in its transaction. ``quota``: the key's, when the caller has just read it."""
        texts = _texts(task) if new or task.task_id not in self.features else 0
        price = self.settings.price_for(task.access.level)
        cost = cost_of(images, price, texts, self.settings.price_per_1k_texts)
        refusal = (quota or self.ledger.quota(key_id)).refusal(images, cost)
        if refusal is not None:
            raise quota_error(refusal)

    def _encode(self, task: StoredTask) -> torch.Tensor:
        return self.backend.encode_texts(task.class_names, task.templates)

    def get_task(self, key_id: str, task_id: str) -> StoredTask:
        """The key's task, from ``known_tasks`` or the ledger (blocks on a miss)."""
        task = self.known_tasks.get(key_id, task_id) or self.ledger.load_task(task_id, key_id)
        if task is None:  # another key's task is as unknown as a made-up id
            raise APIError(ErrorCode.NOT_FOUND, f"no task {echo(task_id)} for this API key")
        self.known_tasks.add(task)
        return task

    def logits(
        self,
        task: StoredTask,
        images: np.ndarray,
        key_id: str,
        precision: str = "serving",
        seed: int | None = None,
    ) -> Work:
        """``seed``: the request's noise seed (``access.noise_seed``), needed by a task with noise.
        The answer holds the fields of ``LogitsResponse`` the task's level reveals, and no other."""
        logits, passes, texts = self._forward(task, images, key_id, precision)
        fields = reveal(blur_logits(logits, task.access, seed), task.access)
        answer = pack({name: _wire_field(value) for name, value in fields.items()})
        return self._work(task, answer, len(images), passes, texts)

    def loss(
        self,
        task: StoredTask,
        images: np.ndarray,
        labels: np.ndarray,
        kind: str,
        gamma: float,
        key_id: str,
        precision: str = "serving",
        seed: int | None = None,
    ) -> Work:
        """Losses and correctness from the (noisy) logits; the losses rounded to the task's decimals."""
        logits, passes, texts = self._forward(task, images, key_id, precision)
        losses, correct = per_image_loss(blur_logits(logits, task.access, seed), labels, kind, gamma)
        losses = round_scores(losses, task.access.decimals)
        answer = pack({"losses": wire_view(losses), "correct": correct.tolist()})  # LossResponse's fields
        return self._work(task, answer, len(images), passes, texts)

    def _work(self, task: StoredTask, packed: bytes, images: int, passes: int, texts: int) -> Work:
        """A batch's work, its images charged at the price of the task's level."""
        price = self.settings.price_for(task.access.level)
        answer = Answer(packed, MSGPACK_CONTENT_TYPE)
        return Work(answer, task.task_id, images, passes, texts, price_per_1k_images=price)

    def _forward(
        self, task: StoredTask, images: np.ndarray, key_id: str, precision: str = "serving"
    ) -> tuple[np.ndarray, int, int]:
        """Logits (N, C), the forwards run, and the texts encoded for this call: the task's, when its
        features had been evicted (recomputed here, and charged to this call alone). ``precision`` is
        the request's (``RequestPrecision``); the charge does not depend on it."""
        lane = self.backend.lane(precision)
        self._refuse_texts(key_id, task, len(images), new=False)
        features, computed = self.features.get(task.task_id, lambda: self._encode(task))
        texts = _texts(task) if computed else 0
        if self.batcher is None:
            result = self.backend.logits(images, features, self.observe_forward, lane)
            return result.logits, result.batch_passes, texts
        try:
            image_features, passes = self.batcher.submit(images, lane)
        except QueueFullError as exc:
            raise APIError(
                ErrorCode.QUEUE_FULL, f"{exc}; retry shortly", retry_after=QUEUE_RETRY_AFTER_S
            ) from None
        except BatcherClosedError as exc:
            raise APIError(ErrorCode.NOT_READY, f"{exc}; retry shortly", retry_after=2.0) from None
        return self.backend.logits_from_features(image_features, features), passes, texts

    def _task_id(self, key_id: str, request: TaskRequest) -> str:
        # Same key + model + classes + templates + access -> same id, so registering again is harmless.
        # The default access adds nothing: a level-logits task keeps the id it had before levels.
        parts: list[object] = [key_id, self.settings.model, self.settings.weights_label]
        parts += [request.class_names, request.templates]
        if request.access != Access():
            parts.append(request.access.model_dump(mode="json", exclude_none=True))
        return "task-" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def task_response(task: StoredTask) -> TaskResponse:
    """What registration and ``GET /v1/tasks/{id}`` answer."""
    return TaskResponse(
        task_id=task.task_id,
        num_classes=len(task.class_names),
        class_names=task.class_names,
        templates=task.templates,
        access=task.access,
    )


def _texts(task: StoredTask) -> int:
    return len(task.class_names) * len(task.templates)


def _wire_field(value: np.ndarray) -> object:
    """Scores as a wire tensor, class indices as lists of ints (``LogitsResponse``)."""
    return wire_view(value) if value.dtype.kind == "f" else value.tolist()


def wire_view(array: np.ndarray) -> dict[str, object]:
    """A float32 answer tensor's wire map (as ``WireTensor``) whose data is a view of the array, so
    the one copy made is msgpack's, into the answer itself (``tobytes`` would make a second)."""
    wire = np.asarray(array, dtype=np.dtype(OUTPUT_DTYPE).newbyteorder("<"), order="C")
    return {"shape": list(wire.shape), "dtype": OUTPUT_DTYPE, "data": wire.data.cast("B")}
