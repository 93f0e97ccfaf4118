"""What a client may hold open, under a real uvicorn with the server's own protocol, over raw sockets:
a head that does not arrive in time is 408 and closed, an idle socket is closed, a body that does not
arrive in time is 408, closed and never charged; connections beyond the cap are refused 503 while the
open ones work; a key's upload beyond its slots is 429 while another key's goes on; a body the memory
budget cannot hold is 503 before a byte of it is sent. After each, health is 200 and the usage charged
is what was answered. Deadlines here are short; the waits only guard against a hang."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fastapi import FastAPI

from server import create_app, parse_args
from server.api.connections import uvicorn_options
from server.api.state import AppState
from server.settings import REQUEST_OVERHEAD_BYTES
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, Routes, UsageResponse, WireTensor
from tests.helpers import KEYS, random_images, served_in_thread, tiny_argv

WAIT_S = 30.0  # only against a hang


@contextmanager
def serving(tmp_path: Path, *flags: str) -> Iterator[tuple[int, AppState]]:
    settings = parse_args(
        tiny_argv(tmp_path / "l.sqlite3", *flags), env={"BLACKVIP_API_KEYS": ",".join(KEYS)}
    )
    app: FastAPI = create_app(settings)
    with served_in_thread(app, **uvicorn_options(settings)) as port:
        yield port, app.state.blackvip


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def head(
    method: str, path: str, key: str, body: bytes = b"", content_type: str = MSGPACK_CONTENT_TYPE
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", f"Authorization: Bearer {key}"]
    if method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole answer: status, headers (lower-case names) and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode().split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "closed mid-answer"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: recv reads end of stream (or a reset)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


def request(port: int, method: str, path: str, key: str = KEYS[0], body: bytes = b"", **kw: str) -> tuple:
    with connect(port) as sock:
        sock.sendall(head(method, path, key, body, **kw) + body)
        return read_response(sock)


def register_task(port: int, key: str) -> str:
    body = json.dumps({"class_names": ["a", "b"]}).encode()
    status, _, answer = request(port, "POST", Routes.TASKS, key, body, content_type="application/json")
    assert status == 200, answer
    return json.loads(answer)["task_id"]


def logits_body(images: int) -> bytes:
    return pack({"images": WireTensor.from_numpy(random_images(images, "uint8")).model_dump()})


def usage(port: int, key: str) -> UsageResponse:
    status, _, body = request(port, "GET", Routes.USAGE, key)
    assert status == 200
    return UsageResponse.model_validate_json(body)


def wait_for(condition: Callable[[], bool]) -> None:
    import time

    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def healthy(port: int) -> bool:
    return request(port, "GET", Routes.HEALTH)[0] == 200


def test_a_half_sent_head_is_408_and_closed_and_an_idle_socket_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, "--header-timeout-s", "0.5") as (port, _):
        with connect(port) as half, connect(port) as idle:
            half.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Ty")
            status, headers, body = read_response(half)
            assert status == 408 and error_code(body) == "request_timeout"
            assert headers["connection"] == "close" and closed_by_server(half)
            assert closed_by_server(idle)  # nothing sent: closed without an answer
        with connect(port) as kept:  # after an answer the next head has the deadline too
            kept.sendall(head("GET", Routes.HEALTH, KEYS[0]))
            assert read_response(kept)[0] == 200
            kept.sendall(b"GET /v1/health HTTP/1.1\r\n")
            assert read_response(kept)[0] == 408 and closed_by_server(kept)
        assert healthy(port)


def test_a_slow_body_is_408_closed_and_not_charged(tmp_path: Path) -> None:
    with serving(tmp_path, "--body-timeout-s", "0.5") as (port, state):
        task_id = register_task(port, KEYS[0])
        body = logits_body(4)
        with connect(port) as slow:
            slow.sendall(head("POST", Routes.LOGITS.format(task_id=task_id), KEYS[0], body) + body[:100])
            status, headers, answer = read_response(slow)
            assert status == 408 and error_code(answer) == "request_timeout"
            assert headers["connection"] == "close" and closed_by_server(slow)
        assert usage(port, KEYS[0]).total.images == 0
        assert state.uploads.open(state.keyring.identify(f"Bearer {KEYS[0]}").key_id) == 0
        status, _, _ = request(port, "POST", Routes.LOGITS.format(task_id=task_id), body=body)
        assert status == 200 and healthy(port)
        assert usage(port, KEYS[0]).total.images == 4


def test_connections_beyond_the_cap_are_refused_503_while_the_open_ones_work(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-connections", "3") as (port, _), ExitStack() as stack:
        held = [stack.enter_context(connect(port)) for _ in range(3)]
        held[0].sendall(head("GET", Routes.HEALTH, KEYS[0]))  # all three are open (one answered)
        assert read_response(held[0])[0] == 200
        with connect(port) as extra:
            status, headers, body = read_response(extra)
            assert status == 503 and error_code(body) == "server_busy"
            assert int(headers["retry-after"]) >= 1 and closed_by_server(extra)
        for sock in held:  # the open ones still answer, on the same sockets
            sock.sendall(head("GET", Routes.HEALTH, KEYS[0]))
            assert read_response(sock)[0] == 200
        held.pop().close()
        wait_for(lambda: healthy(port))  # a place is free again once the server has seen the close


def test_a_keys_upload_beyond_its_slots_is_429_while_another_key_goes_on(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-uploads-per-key", "2") as (port, state):
        alice = state.keyring.identify(f"Bearer {KEYS[0]}").key_id
        tasks = {key: register_task(port, key) for key in KEYS}
        body = logits_body(3)

        def upload_head(key: str) -> bytes:
            return head("POST", Routes.LOGITS.format(task_id=tasks[key]), key, body)

        with connect(port) as first, connect(port) as second:
            for sock in (first, second):
                sock.sendall(upload_head(KEYS[0]) + body[:10])
            wait_for(lambda: state.uploads.open(alice) == 2)
            with connect(port) as third:
                third.sendall(upload_head(KEYS[0]))
                status, headers, answer = read_response(third)
                assert status == 429 and error_code(answer) == "too_many_uploads"
                assert int(headers["retry-after"]) >= 1 and headers["connection"] == "close"
            status, _, answer = request(
                port, "POST", Routes.LOGITS.format(task_id=tasks[KEYS[1]]), KEYS[1], body
            )
            assert status == 200, answer  # bob's upload is not alice's
            for sock in (first, second):
                sock.sendall(body[10:])
                assert read_response(sock)[0] == 200
        assert state.uploads.open(alice) == 0 and healthy(port)
        assert usage(port, KEYS[0]).total.images == 6 and usage(port, KEYS[1]).total.images == 3


def test_a_body_over_the_memory_budget_is_503_before_it_is_read(tmp_path: Path) -> None:
    budget = ["--max-request-bytes", "262144", "--max-task-bytes", "4096", "--memory-budget-mb", "2.5"]
    with serving(tmp_path, *budget) as (port, state):
        task_id = register_task(port, KEYS[0])
        body = logits_body(64)  # about 197 kB, 1.19 MiB with a request's working memory: two fit in 2.5 MiB
        path = Routes.LOGITS.format(task_id=task_id)
        with connect(port) as first, connect(port) as second:
            for sock in (first, second):
                sock.sendall(head("POST", path, KEYS[0], body) + body[:10])
            wait_for(lambda: state.memory.reserved == 2 * (len(body) + REQUEST_OVERHEAD_BYTES))
            with connect(port) as third:
                third.sendall(head("POST", path, KEYS[1], body))  # the head only: no byte of the body
                status, headers, answer = read_response(third)
                assert status == 503 and error_code(answer) == "server_busy"
                assert int(headers["retry-after"]) >= 1 and headers["connection"] == "close"
                assert closed_by_server(third)
            assert healthy(port)  # a request without a body needs no room
            for sock in (first, second):
                sock.sendall(body[10:])
                assert read_response(sock)[0] == 200
        assert state.memory.reserved == 0 and healthy(port)
        assert usage(port, KEYS[0]).total.images == 128 and usage(port, KEYS[1]).total.images == 0


def test_a_refused_upload_still_being_sent_reads_its_answer_not_a_reset(tmp_path: Path) -> None:
    """The server answers 429 before reading a body the client is still writing: the connection
    lingers (FIN after the answer, the rest read and dropped), so the sender finishes writing and reads
    the 429; closed at once, its unread bytes would reset the connection and lose the answer."""
    with serving(tmp_path, "--max-uploads-per-key", "1", "--max-request-bytes", str(8 * 2**20)) as (
        port,
        state,
    ):
        alice = state.keyring.identify(f"Bearer {KEYS[0]}").key_id
        task_id = register_task(port, KEYS[0])
        path = Routes.LOGITS.format(task_id=task_id)
        body = b"\xc1" * (6 * 2**20)  # far more than the socket buffers hold: the server must read it
        with connect(port) as holder:
            holder.sendall(head("POST", path, KEYS[0], body) + body[:10])
            wait_for(lambda: state.uploads.open(alice) == 1)
            with connect(port) as refused:
                refused.sendall(head("POST", path, KEYS[0], body) + body)  # a reset raises here
                status, headers, answer = read_response(refused)
                assert status == 429 and error_code(answer) == "too_many_uploads"
                assert headers["connection"] == "close" and closed_by_server(refused)
        wait_for(lambda: state.uploads.open(alice) == 0)
        assert healthy(port) and usage(port, KEYS[0]).total.images == 0
