"""The idempotency protocol: every charged call is charged exactly once.

Scope (API key, request id): a first request is computed, then charged in one ledger transaction
together with its body hash and answer; a repeat with the same body replays that answer (no model
call, no charge); a repeat with another body is 422; a repeat while the first is still running is
409; a repeat whose answer has been dropped is 410, never a free recompute. The quota is checked
inside the charging transaction. Methods here block (ledger commits) and run in a worker thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from server.errors import APIError, echo
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
from server.settings import ServerSettings
from shared.protocol import Endpoint, ErrorCode, cost_of

__all__ = [
    "Charge",
    "Idempotency",
    "Served",
    "Work",
    "body_hash",
    "charge_for",
    "quota_error",
    "task_limit_error",
]


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
    price_per_1k_images: float | None = None  # the task level's price; None: the server's

    def cost(self, settings: ServerSettings) -> float:
        images_price = (
            settings.price_per_1k_images if self.price_per_1k_images is None else self.price_per_1k_images
        )
        return cost_of(self.images, images_price, self.texts, settings.price_per_1k_texts)


@dataclass(frozen=True)
class Served:
    answer: Answer
    replayed: bool


def body_hash(method: str, path: str, body: bytes | bytearray) -> str:
    """What makes two requests under one id "the same": method, path (with the task id) and body."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def charge_for(
    key_id: str, endpoint: Endpoint, request_id: str | None, method: str, path: str, body: bytes | bytearray
) -> Charge:
    """The charge of one request: its payer, endpoint, id, body size and ``body_hash``."""
    return Charge(key_id, endpoint, request_id, len(body), body_hash(method, path, body))


class Idempotency:
    """Runs charged calls: claims their request ids, replays or refuses repeats, charges the rest."""

    def __init__(
        self,
        settings: ServerSettings,
        ledger: Ledger,
        on_charged: Callable[[str, Endpoint, int], None] | None = None,
    ) -> None:
        """``on_charged`` hears (key id, endpoint, images) of each charge once it has committed."""
        self.settings = settings
        self.ledger = ledger
        self.on_charged = on_charged
        self._claimed: set[tuple[str, str]] = set()  # (key, request id) being computed now
        self._active = 0  # charged calls in progress, for a draining shutdown
        self._state = threading.Condition()

    @property
    def active(self) -> int:
        """Charged calls in progress; read without the lock, so a hint (the batcher's)."""
        return self._active

    @property
    def claimed(self) -> int:
        """Request ids being answered now."""
        with self._state:
            return len(self._claimed)

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

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no charged call is in progress; False if ``timeout`` passed first."""
        with self._state:
            return self._state.wait_for(lambda: self._active == 0, timeout=timeout)

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
            cost=done.cost(self.settings),
        )
        # A failure to commit (LedgerUnavailableError) is answered 503 by the app's one handler.
        remember = (charge.body_hash, done.answer if self.settings.replay_ttl > 0 else None)
        try:
            self.ledger.charge(record, remember=remember, task=done.new_task)
        except QuotaExceededError as exc:
            raise quota_error(exc) from None
        except TaskLimitError as exc:
            raise task_limit_error(exc) from None
        if self.on_charged is not None:
            self.on_charged(record.key_id, charge.endpoint, done.images)


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


def task_limit_error(exc: TaskLimitError) -> APIError:
    if exc.kind == "tasks":
        return APIError(ErrorCode.TASK_LIMIT_REACHED, str(exc), {"max_tasks_per_key": exc.limit})
    detail = {"max_task_store_bytes_per_key": exc.limit, "used": exc.used, "requested": exc.requested}
    return APIError(ErrorCode.TASK_LIMIT_REACHED, str(exc), detail)


def quota_error(exc: QuotaExceededError) -> APIError:
    if exc.kind == "images":
        detail = {"quota_images": exc.quota, "used": exc.used, "requested": exc.requested}
    else:
        detail = {"quota_cost": exc.quota, "used_cost": exc.used, "requested_cost": exc.requested}
    return APIError(ErrorCode.QUOTA_EXCEEDED, str(exc), detail)
