"""The service's own exception: a status, a stable code and a message that names what is wrong.

Raised anywhere below the HTTP layer (validation, quotas, ledger); ``server.api.app`` turns it into the
one error body shape of ``shared.protocol.ErrorBody``, kept small whatever the input: an echo of the
sender's text is cut to ``ECHO_CHARS``, a list of problems to ``MAX_PROBLEMS`` plus a count, and a
body that would still exceed ``MAX_ERROR_BYTES`` loses its detail. ``error_responses`` documents
what a route can answer in OpenAPI, by the same codes.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

from shared.protocol import ERROR_STATUS, ErrorBody, ErrorCode, ErrorDetail

__all__ = [
    "ECHO_CHARS",
    "MAX_ERROR_BYTES",
    "MAX_PROBLEMS",
    "APIError",
    "bounded_body",
    "echo",
    "error_responses",
    "problems",
    "retry_after_value",
]

ECHO_CHARS = 64
MAX_PROBLEMS = 10
MAX_MESSAGE_CHARS = 1000
MAX_ERROR_BYTES = 4096


class APIError(Exception):
    """An error answer; its HTTP status is the code's, from ``shared.protocol.ERROR_STATUS``."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        detail: dict[str, Any] | None = None,
        retry_after: float | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = ERROR_STATUS[code]
        self.code = code
        self.message = message
        self.detail = detail
        self.retry_after = retry_after  # seconds, sent as Retry-After
        # Sent with ``Connection: close`` and the connection closed: for an answer given while the
        # request's body is still (partly) unread, which the connection could only carry on reading.
        self.close_connection = close_connection


def retry_after_value(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (at least 1): a client that waits that long finds
    what it waits for."""
    return str(max(1, math.ceil(seconds)))


def echo(value: object) -> str:
    """``repr(value)``, cut to ``ECHO_CHARS`` characters: enough to recognise, never an amplifier."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def problems(items: list[dict[str, str]]) -> dict[str, Any]:
    """The first ``MAX_PROBLEMS`` problems, each field cut short, and how many there were."""
    shown = [{k: v[:ECHO_CHARS] for k, v in item.items()} for item in items[:MAX_PROBLEMS]]
    return {"errors": shown, "total_errors": len(items)}


def bounded_body(code: ErrorCode, message: str, detail: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON error body, at most ``MAX_ERROR_BYTES`` long."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    body = ErrorBody(error=ErrorDetail(code=code, message=message, detail=detail)).model_dump(mode="json")
    if len(json.dumps(body)) > MAX_ERROR_BYTES:
        body["error"]["detail"] = {"truncated": True}
    return body


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for a route that can answer with ``codes``: each status of the shared table
    once, with the ``ErrorBody`` schema and the codes it stands for."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):  # steps of one route may share a code
        by_status.setdefault(ERROR_STATUS[code], []).append(code.value)
    return {
        status: {"model": ErrorBody, "description": f"{HTTPStatus(status).phrase}: {', '.join(names)}"}
        for status, names in sorted(by_status.items())
    }
