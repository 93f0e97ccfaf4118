"""Health, info, usage and ``/metrics`` never wait for the model's requests: with every thread of the
shared pool held by charged requests (here: all blocked on the ledger's writer, held by the test), the
real app under a real uvicorn still answers each of them. Their handlers and dependencies run on the
event loop, and usage's ledger read on the control routes' own threads. Before, each took a thread of
the shared pool (a sync dependency is enough) and waited until one came free."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from server import create_app, parse_args
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, Routes, WireTensor
from tests.helpers import KEYS, random_images, served_in_thread, tiny_argv

KEY = {"Authorization": f"Bearer {KEYS[0]}"}


def loss_body(n: int) -> bytes:
    images = random_images(n, "uint8")
    return pack({"images": WireTensor.from_numpy(images).model_dump(), "labels": [i % 3 for i in range(n)]})


def test_control_routes_answer_while_the_shared_thread_pool_is_held(tmp_path: Path) -> None:
    app = create_app(parse_args(tiny_argv(tmp_path / "l.sqlite3", "--api-keys", KEYS[0]), env={}))
    with served_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        task_id = httpx.post(f"{base}{Routes.TASKS}", json={"class_names": ["a", "b", "c"]}, headers=KEY)
        task_id = task_id.json()["task_id"]
        ledger = app.state.blackvip.ledger
        blocked, answers = 45, []  # more charged requests than the pool's 40 threads

        def charged_request() -> None:
            url = f"{base}{Routes.LOSS.format(task_id=task_id)}"
            headers = {**KEY, "Content-Type": MSGPACK_CONTENT_TYPE}
            answers.append(httpx.post(url, content=loss_body(1), headers=headers, timeout=120).status_code)

        with ledger.db._lock:  # SQLite's one writer: every charge waits here, holding its pool thread
            threads = [threading.Thread(target=charged_request) for _ in range(blocked)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60
            # a leader blocked on the writer and 39 charges behind it: the pool's 40 threads (AnyIO's
            # default) all held, 5 more requests waiting for one
            while len(ledger.group._pending) < 39:
                assert time.monotonic() < deadline, "the charged requests did not pile up"
                time.sleep(0.05)
            with httpx.Client(base_url=base, headers=KEY, timeout=20) as control:
                for route in (Routes.HEALTH, Routes.INFO, Routes.USAGE, Routes.USAGE_PERIODS, "/metrics"):
                    assert control.get(route).status_code == 200, route
        for thread in threads:
            thread.join(timeout=120)
    assert answers == [200] * blocked  # and every held request was answered once the writer was free
