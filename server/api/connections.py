"""What a client may hold open before the app sees a request: connections, and the time a request's
head may take. Both happen below ASGI, so they live in the HTTP protocol that uvicorn runs for each
connection: ``uvicorn.Config(http=...)`` takes a protocol class, and this one is uvicorn's own httptools
protocol (llhttp, in C: its head parsing costs a fraction of the pure-Python h11's, which was most of a
small request's HTTP work, bench/results/throughput.md section d) with two additions.

* At most ``max_connections`` connections at once: one more is answered 503 ``server_busy`` (with
  ``Retry-After``) and closed as soon as it is made, so a flood of sockets cannot take every file
  descriptor or the memory of one connection each.
* A request's head must arrive whole within ``header_timeout_s`` of the connection being made or of
  the previous answer: a sender that has sent part of one is answered 408 ``request_timeout`` and
  closed; a socket that has sent nothing is closed without an answer (a client reusing a pooled
  connection must never read a 408 as the answer to a request it sends just then).

While a request is being answered there is no head deadline; its body has its own (``read_body``).

* A connection closed after an answer given before its request's body was read (429
  ``too_many_uploads``, 503 ``server_busy``, 408 for a late body) lingers: the answer is sent, then
  the write side is shut (FIN), and whatever the client still sends is read and dropped for up to
  ``LINGER_S`` (or until the client's own FIN) before the socket is closed. Closed at once, a socket
  with unread bytes is reset by the kernel, and a client still writing its body loses the answer with
  the connection (it sees a reset, never the 429 or 503 that says when to retry).
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import bounded_body, retry_after_value
from server.settings import ServerSettings
from shared.protocol import ERROR_STATUS, ErrorCode

__all__ = ["BoundedHttpProtocol", "bounded_protocol", "raw_error", "uvicorn_options"]

log = logging.getLogger(__name__)

REFUSED_RETRY_AFTER_S = 1.0
LINGER_S = 2.0  # how long a closing connection keeps reading (and dropping) what its client still sends


def raw_error(code: ErrorCode, message: str, retry_after: float | None = None) -> bytes:
    """A whole HTTP/1.1 error answer in the one error body shape, closing the connection; for answers
    written below the app, where neither a request nor a response object exists."""
    status = ERROR_STATUS[code]
    body = json.dumps(bounded_body(code, message, None)).encode()
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after_value(retry_after)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and a head deadline (see the module's
    docstring); the limits are class attributes, set by ``bounded_protocol`` for one server's settings."""

    max_connections: int = 1024
    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_started = False  # part of a request head has arrived, not all of it
        self.lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn holds the transport for writes and closes; the wrapper behaves as one (duck-typed)
        super().connection_made(cast(asyncio.Transport, LingeringTransport(transport, self)))
        if len(self.connections) > self.max_connections:
            self.connections.discard(self)  # a refused connection holds no place among the open ones
            log.info("connection refused: %d open, the most allowed", self.max_connections)
            message = f"the server has {self.max_connections} connections open, the most it keeps; retry"
            transport.write(raw_error(ErrorCode.SERVER_BUSY, message, REFUSED_RETRY_AFTER_S))
            transport.close()
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # answered and closing: the rest of the request is read and dropped
            return
        super().data_received(data)
        if not self._waiting_for_head():
            self._cancel_head_deadline()

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_started = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request already received
        if self._waiting_for_head() and not self.transport.is_closing():
            self._arm_head_deadline()  # afresh: the next head has the whole deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        """No request in progress: the app is not answering one, so the next head is awaited."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if self._head_started:
            log.info("request head not received within %g s; closing", self.header_timeout_s)
            message = f"the request's headers did not arrive within {self.header_timeout_s:g} s"
            self.transport.write(raw_error(ErrorCode.REQUEST_TIMEOUT, message))
        self.transport.close()


class LingeringTransport:
    """The connection's transport, as uvicorn uses it, with a lingering ``close`` (see the module's
    docstring); every other attribute is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpProtocol) -> None:
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        """True from the lingering close on: uvicorn then starts no keep-alive timer and no next request."""
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        transport = self._transport
        if self._protocol.lingering or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        self._protocol.lingering = True
        transport.write_eof()  # after what is buffered: the client reads the whole answer, then EOF
        transport.resume_reading()  # uvicorn may have paused it while the body waited to be read
        self._protocol.loop.call_later(LINGER_S, transport.close)


def bounded_protocol(settings: ServerSettings) -> type[BoundedHttpProtocol]:
    """The protocol class for ``settings``' limits (uvicorn builds one instance per connection)."""
    limits = {"max_connections": settings.max_connections, "header_timeout_s": settings.header_timeout_s}
    return type("ConfiguredHttpProtocol", (BoundedHttpProtocol,), limits)


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """What ``uvicorn.Config`` takes besides the app, host and port to serve under these limits."""
    return {"http": bounded_protocol(settings)}
