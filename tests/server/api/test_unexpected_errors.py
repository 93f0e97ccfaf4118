"""An unexpected error (a bug) costs its request, not the connection: the real app under a real uvicorn
on loopback answers 500 in the one error shape, counts it, and answers the next request sent on the
same keep-alive socket. (Starlette's outermost handler re-raises after answering, and uvicorn closed
the connection on that, so a client's next pooled request met a reset connection.)"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from server import create_app, parse_args
from shared.protocol import Routes
from tests.helpers import served_in_thread, tiny_argv


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    app: FastAPI = create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3"), env={}))

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/broken", broken)
    with served_in_thread(app) as port:
        yield port


def exchange(sock: socket.socket, path: str) -> tuple[bytes, bytes]:
    """One GET on ``sock``, kept alive; the status line and the body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return head.split(b"\r\n")[0], body


def test_a_500_answers_in_the_error_shape_and_keeps_the_connection(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        status, body = exchange(sock, "/v1/broken")
        assert b" 500 " in status
        error = json.loads(body)["error"]
        assert error["code"] == "internal_error" and error["message"] == "internal error: RuntimeError"
        status, _ = exchange(sock, Routes.HEALTH)  # same socket: still open
        assert b" 200 " in status
        status, metrics = exchange(sock, "/metrics")
    assert b" 200 " in status
    assert b'blackvip_http_requests_total{method="GET",route="/v1/broken",status="500"} 1.0' in metrics
