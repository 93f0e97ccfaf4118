"""What each charged endpoint does, apart from HTTP: tasks, their text features, and model calls.

Methods here block (model forwards, ledger reads) and are called from a worker thread. Each returns
the ``Work`` that ``Idempotency.serve`` charges exactly once (``server.serving.idempotency``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from server.errors import APIError, echo
from server.ledger import Answer, Ledger, StoredTask, TaskLimitError
from server.metrics import ServerMetrics
from server.serving.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from server.serving.clip_model import ClipBackend, per_image_loss
from server.serving.forward_shapes import forward_shapes
from server.serving.idempotency import Idempotency, Work, quota_error, task_limit_error
from server.serving.tasks import TextFeatureCache
from server.settings import ServerSettings
from shared.codec import OUTPUT_DTYPE, pack
from shared.protocol import MSGPACK_CONTENT_TYPE, ErrorCode, TaskRequest, TaskResponse, cost_of

__all__ = ["QueryService", "wire_view"]

QUEUE_RETRY_AFTER_S = 1.0


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
        self.forward_shapes = forward_shapes(settings, backend) if settings.batcher else None
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
            )
            if settings.batcher
            else None
        )

    def close(self, timeout: float) -> bool:
        """After ``idempotency.wait_idle``: stop the batcher's worker (nothing is queued any more)."""
        return self.batcher.close(timeout) if self.batcher is not None else True

    def register_task(self, request: TaskRequest, key_id: str) -> Work:
        task_id = self._task_id(key_id, request)
        known = self.ledger.load_task(task_id, key_id) is not None
        if not known and self.ledger.task_count(key_id) >= self.settings.max_tasks_per_key:
            raise task_limit_error(TaskLimitError(self.settings.max_tasks_per_key))  # before any text work
        task = StoredTask(task_id, key_id, list(request.class_names), list(request.templates))
        self.features.get(task_id, lambda: self.backend.encode_texts(task.class_names, task.templates))
        response = TaskResponse(
            task_id=task_id,
            num_classes=len(task.class_names),
            class_names=task.class_names,
            templates=task.templates,
        )
        return Work(
            answer=Answer(response.model_dump_json().encode(), "application/json"),
            task_id=task_id,
            texts=0 if known else len(task.class_names) * len(task.templates),
            new_task=None if known else task,
        )

    def get_task(self, key_id: str, task_id: str) -> StoredTask:
        task = self.ledger.load_task(task_id, key_id)
        if task is None:  # another key's task is as unknown as a made-up id
            raise APIError(ErrorCode.NOT_FOUND, f"no task {echo(task_id)} for this API key")
        return task

    def logits(self, task: StoredTask, images: np.ndarray, key_id: str) -> Work:
        logits, passes = self._forward(task, images, key_id)
        answer = pack({"logits": wire_view(logits)})  # the fields of LogitsResponse
        return Work(Answer(answer, MSGPACK_CONTENT_TYPE), task.task_id, len(images), passes)

    def loss(
        self, task: StoredTask, images: np.ndarray, labels: np.ndarray, kind: str, gamma: float, key_id: str
    ) -> Work:
        logits, passes = self._forward(task, images, key_id)
        losses, correct = per_image_loss(logits, labels, kind, gamma)
        answer = pack({"losses": wire_view(losses), "correct": correct.tolist()})  # LossResponse's fields
        return Work(Answer(answer, MSGPACK_CONTENT_TYPE), task.task_id, len(images), passes)

    def _forward(self, task: StoredTask, images: np.ndarray, key_id: str) -> tuple[np.ndarray, int]:
        # A cheap early refusal, before any forward; the charge checks again inside its transaction.
        cost = cost_of(len(images), self.settings.price_per_1k_images)
        refusal = self.ledger.quota(key_id).refusal(len(images), cost)
        if refusal is not None:
            raise quota_error(refusal)
        features, _ = self.features.get(
            task.task_id, lambda: self.backend.encode_texts(task.class_names, task.templates)
        )
        if self.batcher is None:
            result = self.backend.logits(images, features, self.observe_forward)
            return result.logits, result.batch_passes
        try:
            image_features, passes = self.batcher.submit(images)
        except QueueFullError as exc:
            raise APIError(
                ErrorCode.QUEUE_FULL, f"{exc}; retry shortly", retry_after=QUEUE_RETRY_AFTER_S
            ) from None
        except BatcherClosedError as exc:
            raise APIError(ErrorCode.NOT_READY, f"{exc}; retry shortly", retry_after=2.0) from None
        return self.backend.logits_from_features(image_features, features), passes

    def _task_id(self, key_id: str, request: TaskRequest) -> str:
        # Same key + model + classes + templates -> same id, so registering again is harmless.
        blob = json.dumps(
            [key_id, self.settings.model, self.settings.weights_label, request.class_names, request.templates]
        )
        return "task-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def wire_view(array: np.ndarray) -> dict[str, object]:
    """A float32 answer tensor's wire map (as ``WireTensor``) whose data is a view of the array, so
    the one copy made is msgpack's, into the answer itself (``tobytes`` would make a second)."""
    wire = np.asarray(array, dtype=np.dtype(OUTPUT_DTYPE).newbyteorder("<"), order="C")
    return {"shape": list(wire.shape), "dtype": OUTPUT_DTYPE, "data": wire.data.cast("B")}
