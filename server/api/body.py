"""Reading request bodies without trusting the sender: content type first, then a size cap that
holds whether or not a Content-Length header is sent (chunked bodies are counted as they arrive)."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request

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


async def read_body(request: Request, content_type: str, limit: int) -> bytes:
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
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, f"exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The sender went away mid-upload: nothing to answer, nothing charged, no traceback.
        log.info("client disconnected after %d bytes of %s", size, request.url.path)
        raise APIError(ErrorCode.CLIENT_DISCONNECTED, "the client disconnected mid-upload") from None
    return b"".join(chunks)
