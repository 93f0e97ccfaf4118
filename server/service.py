"""What each endpoint does, apart from HTTP: tasks, model calls, and charging them exactly once.

Methods here block (model forwards, SQLite commits) and are called from a worker thread.
``serve`` wraps every charged call in the idempotency protocol: scope (API key, request id); a
first request is computed, then charged in one ledger transaction together with its body hash and
answer; a repeat with the same body replays that answer (no model call, no charge); a repeat with
another body is 422; a repeat while the first is still running is 409; a repeat whose answer has
been dropped is 410, never a free recompute. The quota is checked inside the charging transaction.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from server.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from server.clip_model import ClipBackend, per_image_loss
from server.errors import APIError, echo
from server.forward_shapes import forward_shapes
from server.ledger import (
    Answer,
    DuplicateRequestError,
    Ledger,
    QueryRecord,
    QuotaExceededError,
    Remembered,
    StoredTask,
    TaskLimitError,
)
from server.rejections import RejectionCounter
from server.settings import ServerSettings
from server.tasks import TextFeatureCache
from shared.codec import OUTPUT_DTYPE, pack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    Endpoint,
    ErrorCode,
    TaskRequest,
    TaskResponse,
    UsageCounts,
    UsageResponse,
    cost_of,
)

__all__ = ["Charge", "QueryService", "Served", "Work", "body_hash", "usage_from_ledger", "wire_view"]

QUEUE_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class Charge:
    """Who pays for a call and how it is identified: filled in by the HTTP layer."""

    key_id: str
    endpoint: Endpoint
    request_id: str | None
    bytes: int
    body_hash: str


@dataclass(frozen=True)
class Work:
    """A computed answer and what it cost."""

    answer: Answer
    task_id: str
    images: int = 0
    batch_passes: int = 0
    texts: int = 0
    new_task: StoredTask | None = None


@dataclass(frozen=True)
class Served:
    answer: Answer
    replayed: bool


def body_hash(method: str, path: str, body: bytes) -> str:
    """What makes two requests under one id "the same": method, path (with the task id) and body."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


class QueryService:
    def __init__(self, settings: ServerSettings, backend: ClipBackend, ledger: Ledger) -> None:
        self.settings = settings
        self.backend = backend
        self.ledger = ledger
        self.features = TextFeatureCache(int(settings.text_cache_mb * 2**20))
        self._claimed: set[tuple[str, str]] = set()  # (key, request id) being computed now
        self._active = 0  # charged calls in progress, for a draining shutdown
        self._state = threading.Condition()
        self.forward_shapes = forward_shapes(settings, backend) if settings.batcher else None
        self.batcher = (
            DynamicBatcher(
                backend.image_features,
                max_batch=settings.max_forward_batch,
                max_delay_s=settings.max_queue_delay_ms / 1000.0,
                max_queue_images=settings.max_queue_images,
                shapes=self.forward_shapes,
                name=f"batcher-{backend.device}",
                callers=lambda: self._active,  # a hint, read without the lock
            )
            if settings.batcher
            else None
        )

    def close(self, timeout: float) -> bool:
        """After ``wait_idle``: stop the batcher's worker (nothing is queued any more)."""
        return self.batcher.close(timeout) if self.batcher is not None else True

    # -- the idempotency protocol ----------------------------------------------------------------

    def serve(self, charge: Charge, work: Callable[[], Work]) -> Served:
        with self._in_progress():
            if charge.request_id is None:
                done = work()
                self._commit(charge, done)
                return Served(done.answer, replayed=False)
            with self._claim(charge.key_id, charge.request_id):
                seen = self.ledger.recall(charge.key_id, charge.request_id)
                if seen is not None:
                    return Served(_replay(seen, charge), replayed=True)
                done = work()
                try:
                    self._commit(charge, done)
                except DuplicateRequestError:  # charged meanwhile elsewhere (another replica)
                    seen = self.ledger.recall(charge.key_id, charge.request_id)
                    if seen is None:
                        raise _expired(charge.request_id) from None
                    return Served(_replay(seen, charge), replayed=True)
                return Served(done.answer, replayed=False)

    @contextmanager
    def _claim(self, key_id: str, request_id: str) -> Iterator[None]:
        claim = (key_id, request_id)
        with self._state:
            if claim in self._claimed:
                raise APIError(
                    ErrorCode.REQUEST_IN_PROGRESS,
                    f"request id {echo(request_id)} is still being answered; retry shortly",
                    retry_after=1.0,
                )
            self._claimed.add(claim)
        try:
            yield
        finally:
            with self._state:
                self._claimed.discard(claim)

    @contextmanager
    def _in_progress(self) -> Iterator[None]:
        with self._state:
            self._active += 1
        try:
            yield
        finally:
            with self._state:
                self._active -= 1
                self._state.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no charged call is in progress; False if ``timeout`` passed first."""
        with self._state:
            return self._state.wait_for(lambda: self._active == 0, timeout=timeout)

    def _commit(self, charge: Charge, done: Work) -> None:
        record = QueryRecord(
            key_id=charge.key_id,
            endpoint=charge.endpoint,
            task_id=done.task_id,
            request_id=charge.request_id,
            images=done.images,
            batch_passes=done.batch_passes,
            bytes=charge.bytes,
            texts=done.texts,
            cost=cost_of(done.images, self.settings.price_per_1k_images),
        )
        # A failure to commit (LedgerUnavailableError) is answered 503 by the app's one handler.
        remember = (charge.body_hash, done.answer if self.settings.replay_ttl > 0 else None)
        try:
            self.ledger.charge(record, remember=remember, task=done.new_task)
        except QuotaExceededError as exc:
            raise _quota_error(exc) from None
        except TaskLimitError as exc:
            raise _task_limit_error(exc) from None

    # -- the work of each endpoint -----------------------------------------------------------------

    def register_task(self, request: TaskRequest, key_id: str) -> Work:
        task_id = self._task_id(key_id, request)
        known = self.ledger.load_task(task_id, key_id) is not None
        if not known and self.ledger.task_count(key_id) >= self.settings.max_tasks_per_key:
            raise _task_limit_error(TaskLimitError(self.settings.max_tasks_per_key))  # before any text work
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
        quota = self.settings.quota_images
        if quota is not None:  # cheap early refusal; the charge re-checks inside its transaction
            used = self.ledger.images_used(key_id)
            if used + len(images) > quota:
                raise _quota_error(QuotaExceededError(used, quota, len(images)))
        features, _ = self.features.get(
            task.task_id, lambda: self.backend.encode_texts(task.class_names, task.templates)
        )
        if self.batcher is None:
            result = self.backend.logits(images, features)
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


def _replay(seen: Remembered, charge: Charge) -> Answer:
    if seen.body_hash != charge.body_hash:
        raise APIError(
            ErrorCode.IDEMPOTENCY_MISMATCH,
            f"request id {echo(charge.request_id)} was already used with a different request; "
            "use a new id for a new request",
        )
    if seen.answer is None:
        raise _expired(charge.request_id)
    return seen.answer


def _expired(request_id: str | None) -> APIError:
    return APIError(
        ErrorCode.REPLAY_EXPIRED,
        f"request id {echo(request_id)} was answered and charged, but its stored answer has expired; "
        "it is not recomputed and not charged again: send the work again under a new id",
    )


def _task_limit_error(exc: TaskLimitError) -> APIError:
    return APIError(ErrorCode.TASK_LIMIT_REACHED, str(exc), {"max_tasks_per_key": exc.limit})


def _quota_error(exc: QuotaExceededError) -> APIError:
    return APIError(
        ErrorCode.QUOTA_EXCEEDED,
        str(exc),
        {"quota_images": exc.quota, "used": exc.used, "requested": exc.requested},
    )


def usage_from_ledger(
    ledger: Ledger, rejections: RejectionCounter, key_id: str, price_per_1k_images: float
) -> UsageResponse:
    by_endpoint = {name: UsageCounts(**counts) for name, counts in ledger.usage_by_endpoint(key_id).items()}
    total = UsageCounts(
        **{
            name: sum(getattr(counts, name) for counts in by_endpoint.values())
            for name in UsageCounts.model_fields
        }
    )
    rejected = rejections.by_status(ledger, key_id)
    return UsageResponse(
        key_id=key_id,
        total=total,
        by_endpoint=by_endpoint,
        rejected_requests=sum(rejected.values()),
        rejected_by_status=rejected,
        price_per_1k_images=price_per_1k_images,
    )
