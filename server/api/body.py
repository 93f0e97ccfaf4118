"""Reading request bodies without trusting the sender: content type first, then a size cap that
holds whether or not a Content-Length header is sent (chunked bodies are counted as they arrive), one
of the key's upload slots (``server.api.uploads``) and a deadline for the whole body: a sender too slow
to finish within ``body_timeout_s`` is answered 408 and its connection closed, nothing charged.

A body of a declared length is read into a bytearray of exactly that length, filled in place and handed
on as it is; a chunked one gathers in a BytesIO, whose value is handed on without a copy. A list of
chunks joined at the end, or a buffer turned into bytes, holds the body twice at its largest moment, and
a growing buffer over-allocates (an eighth, for BytesIO): the memory budget reserves the body's bytes."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import NoReturn

from starlette.requests import ClientDisconnect, Request

from server.api.uploads import UploadSlots
from server.errors import APIError, echo
from shared.protocol import ErrorCode

__all__ = ["read_body"]

log = logging.getLogger(__name__)


def _too_large(limit: int, detail: str) -> APIError:
    return APIError(
        ErrorCode.BODY_TOO_LARGE,
        f"request body {detail}; this server accepts at most {limit} bytes",
        {"max_request_bytes": limit},
    )


async def read_body(
    request: Request, content_type: str, limit: int, key_id: str, slots: UploadSlots, timeout_s: float
) -> bytes | bytearray:
    """The body, checked before any of it is read: type, declared size, then a slot of ``key_id``'s."""
    received_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if received_type != content_type:
        shown = echo(received_type) if received_type else "none"
        raise APIError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be {content_type}; received {shown}",
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(ErrorCode.MALFORMED_BODY, f"bad Content-Length {echo(declared)}")
        if int(declared) > limit:
            raise _too_large(limit, f"declares {declared} bytes")
    with slots.held(key_id):
        try:
            async with asyncio.timeout(timeout_s):
                if declared is not None:
                    return await _read_declared(request, int(declared))
                return await _read_capped(request, limit)
        except TimeoutError:
            log.info("body of %s not received within %g s", request.url.path, timeout_s)
            raise APIError(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request body did not arrive within {timeout_s:g} s",
                {"body_timeout_s": timeout_s},
                close_connection=True,  # the rest of the body may still be on its way
            ) from None


async def _read_declared(request: Request, length: int) -> bytearray:
    """Exactly ``length`` bytes (uvicorn's parser ends a body at its Content-Length, and a
    shorter one ends in a disconnect)."""
    body, size = bytearray(length), 0
    try:
        async for chunk in request.stream():
            end = size + len(chunk)
            body[size:end] = chunk  # in place: the slice and the chunk are the same length
            size = end
    except ClientDisconnect:
        _disconnected(request, size)
    return body


async def _read_capped(request: Request, limit: int) -> bytes:
    body = io.BytesIO()
    try:
        async for chunk in request.stream():
            if body.tell() + len(chunk) > limit:
                raise _too_large(limit, f"exceeds {limit} bytes")
            body.write(chunk)
    except ClientDisconnect:
        _disconnected(request, body.tell())
    return body.getvalue()


def _disconnected(request: Request, received: int) -> NoReturn:
    # The sender went away mid-upload: nothing to answer, nothing charged, no traceback.
    log.info("client disconnected after %d bytes of %s", received, request.url.path)
    raise APIError(ErrorCode.CLIENT_DISCONNECTED, "the client disconnected mid-upload") from None
