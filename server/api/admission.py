"""A server-wide budget for the request bytes held in memory at once (``--memory-budget-mb``).

A body is read whole into memory before it is parsed, so N uploads open at once hold up to N times
the largest request; per-key upload slots bound one key, not all keys together. Before the app sees a
request that carries a body, this middleware reserves what that body may take -- its Content-Length,
or the route's limit when the length is not declared (chunked) or is larger -- plus the working memory
of a request in flight (``REQUEST_OVERHEAD_BYTES``, measured), and gives it back when
the request has been answered. A request the budget cannot hold is answered 503 ``server_busy`` with
``Retry-After`` and ``Connection: close`` before a byte of its body is read (a client that sent
``Expect: 100-continue`` sends none). Reserving and releasing happen on the event loop: no lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import bounded_body, retry_after_value
from server.settings import REQUEST_OVERHEAD_BYTES
from shared.protocol import ErrorCode, Routes

__all__ = ["BUSY_RETRY_AFTER_S", "MemoryBudget", "RequestBudget", "body_reservation", "task_or_batch_limit"]

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER_S = 1.0  # requests in memory are answered within seconds; a retry then finds room


class MemoryBudget:
    """Bytes reserved out of ``capacity``; a reservation either fits whole or is refused."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0

    def reserve(self, size: int) -> bool:
        if self.reserved + size > self.capacity:
            return False
        self.reserved += size
        return True

    def release(self, size: int) -> None:
        self.reserved -= size


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def body_reservation(scope: Scope, route_limit: int) -> int:
    """The bytes the request may hold in memory, its body and ``REQUEST_OVERHEAD_BYTES``: 0 for a
    request without a body."""
    declared = _header(scope, b"content-length")
    if declared is not None:
        # a bad or oversized length is refused by read_body before anything is read: the limit holds it
        body = min(int(declared), route_limit) if declared.isdigit() else route_limit
    elif _header(scope, b"transfer-encoding") is not None:
        body = route_limit
    else:
        return 0
    return body + REQUEST_OVERHEAD_BYTES


class RequestBudget:
    """Pure ASGI, outside the app's routing: the body is neither read nor buffered here."""

    def __init__(self, app: ASGIApp, budget: MemoryBudget, route_limit: Callable[[str], int]) -> None:
        self.app, self.budget, self.route_limit = app, budget, route_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = body_reservation(scope, self.route_limit(scope["path"])) if scope["type"] == "http" else 0
        if not size:
            await self.app(scope, receive, send)
            return
        if not self.budget.reserve(size):
            log.info("memory budget full (%d bytes held): %s refused", self.budget.reserved, scope["path"])
            await _answer_busy(send, size, self.budget)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.budget.release(size)


async def _answer_busy(send: Send, size: int, budget: MemoryBudget) -> None:
    message = "the server holds as many request bodies in memory as it may; retry shortly"
    detail = {"request_bytes": size, "memory_budget_bytes": budget.capacity}
    body = json.dumps(bounded_body(ErrorCode.SERVER_BUSY, message, detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry_after_value(BUSY_RETRY_AFTER_S).encode()),
        (b"connection", b"close"),  # the body is not read: the connection cannot carry another request
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def task_or_batch_limit(task_bytes: int, request_bytes: int) -> Callable[[str], int]:
    """A path's body limit: task registrations have theirs, every other route the batch limit."""
    return lambda path: task_bytes if path == Routes.TASKS else request_bytes
