"""What each endpoint does, apart from HTTP: tasks, quota, model calls and their charges.

Methods here block (model forwards, SQLite commits) and are called from a worker thread. The quota
check, the forward pass and the ledger commit happen under the model lock, so concurrent requests
can neither overrun a quota nor be served without being counted.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass

import numpy as np
import torch

from server.clip_model import ClipBackend, ForwardResult, per_image_loss
from server.errors import APIError
from server.ledger import Ledger, QueryRecord, StoredTask
from server.settings import ServerSettings
from shared.protocol import ErrorCode, TaskRequest, UsageCounts, UsageResponse

__all__ = ["Charge", "QueryService", "usage_from_ledger"]


@dataclass(frozen=True)
class Charge:
    """Who pays for a call and how it is identified: filled in by the HTTP layer."""

    key_id: str
    endpoint: str
    request_id: str | None
    bytes: int


class QueryService:
    def __init__(self, settings: ServerSettings, backend: ClipBackend, ledger: Ledger) -> None:
        self.settings = settings
        self.backend = backend
        self.ledger = ledger
        self._features: dict[str, torch.Tensor] = {}  # task id -> (C, D) class embeddings
        self._features_lock = threading.Lock()

    def register_task(self, request: TaskRequest, charge: Charge) -> StoredTask:
        texts = len(request.class_names) * len(request.templates)
        if texts > self.settings.max_texts:
            raise APIError(
                422,
                ErrorCode.VALIDATION_ERROR,
                f"task has {texts} class x template texts; at most {self.settings.max_texts} are accepted",
            )
        task = StoredTask(
            task_id=self._task_id(charge.key_id, request),
            key_id=charge.key_id,
            class_names=list(request.class_names),
            templates=list(request.templates),
        )
        encoded = self._ensure_features(task)
        self.ledger.save_task(task)
        self._record(charge, task.task_id, images=0, passes=0, texts=texts if encoded else 0)
        return task

    def get_task(self, key_id: str, task_id: str) -> StoredTask:
        task = self.ledger.load_task(task_id, key_id)
        if task is None:  # another key's task is as unknown as a made-up id
            raise APIError(404, ErrorCode.NOT_FOUND, f"no task {task_id!r} for this API key")
        return task

    def logits(self, task: StoredTask, images: np.ndarray, charge: Charge) -> ForwardResult:
        self._ensure_features(task)
        with self.backend.lock:
            self._check_quota(charge.key_id, len(images))
            result = self.backend.logits(images, self._features[task.task_id])
            self._record(charge, task.task_id, len(images), result.batch_passes, texts=0)
        return result

    def loss(
        self,
        task: StoredTask,
        images: np.ndarray,
        labels: np.ndarray,
        kind: str,
        gamma: float,
        charge: Charge,
    ) -> tuple[np.ndarray, np.ndarray]:
        result = self.logits(task, images, charge)
        return per_image_loss(result.logits, labels, kind, gamma)

    def _ensure_features(self, task: StoredTask) -> bool:
        """Compute and cache the task's class embeddings once; True when this call computed them."""
        with self._features_lock:
            if task.task_id in self._features:
                return False
            self._features[task.task_id] = self.backend.encode_texts(task.class_names, task.templates)
            return True

    def _check_quota(self, key_id: str, images: int) -> None:
        quota = self.settings.quota_images
        if quota is None:
            return
        used = self.ledger.images_used(key_id)
        if used + images > quota:
            raise APIError(
                429,
                ErrorCode.QUOTA_EXCEEDED,
                f"image quota exhausted: {used} of {quota} used, this batch has {images}",
                {"quota_images": quota, "used": used, "requested": images},
            )

    def _record(self, charge: Charge, task_id: str, images: int, passes: int, texts: int) -> None:
        self.ledger.record_query(
            QueryRecord(
                key_id=charge.key_id,
                endpoint=charge.endpoint,
                task_id=task_id,
                request_id=charge.request_id,
                images=images,
                batch_passes=passes,
                bytes=charge.bytes,
                texts=texts,
                cost=images * self.settings.price_per_1k_images / 1000.0,
            )
        )

    def _task_id(self, key_id: str, request: TaskRequest) -> str:
        # Same key + model + classes + templates -> same id, so registering again is harmless.
        blob = json.dumps(
            [key_id, self.settings.model, self.settings.weights_label, request.class_names, request.templates]
        )
        return "task-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def usage_from_ledger(ledger: Ledger, key_id: str, price_per_1k_images: float) -> UsageResponse:
    by_endpoint = {name: UsageCounts(**counts) for name, counts in ledger.usage_by_endpoint(key_id).items()}
    total = UsageCounts(
        **{
            name: sum(getattr(counts, name) for counts in by_endpoint.values())
            for name in UsageCounts.model_fields
        }
    )
    rejected = ledger.rejections_by_status(key_id)
    return UsageResponse(
        key_id=key_id,
        total=total,
        by_endpoint=by_endpoint,
        rejected_requests=sum(rejected.values()),
        rejected_by_status=rejected,
        price_per_1k_images=price_per_1k_images,
    )
