"""Reading request bodies without trusting the sender: content type first, then a size cap that
holds whether or not a Content-Length header is sent (chunked bodies are counted as they arrive)."""

from __future__ import annotations

from starlette.requests import Request

from server.errors import APIError
from shared.protocol import ErrorCode

__all__ = ["read_body"]


def _too_large(limit: int, detail: str) -> APIError:
    return APIError(
        413,
        ErrorCode.BODY_TOO_LARGE,
        f"request body {detail}; this server accepts at most {limit} bytes",
        {"max_request_bytes": limit},
    )


async def read_body(request: Request, content_type: str, limit: int) -> bytes:
    received_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if received_type != content_type:
        raise APIError(
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be {content_type}; received {received_type or 'none'}",
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, ErrorCode.MALFORMED_BODY, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit, f"declares {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, f"exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
