"""The real server process under generated hostile traffic, interleaved with valid traffic on two
keys: at least 10,000 requests (``BLACKVIP_ADVERSARIAL_REQUESTS``), then zero 5xx, zero dropped
connections, a healthy server, and per-key usage equal to exactly what was answered.

Bodies come from hypothesis strategies: msgpack tensors with fuzzed shapes, dtypes, byte counts and
values; garbage, truncated and nested msgpack; labels; JSON task bodies generated from the server's own
OpenAPI schema (``from_schema`` below) and mutated; wrong methods, content types, keys, task ids
(made-up and another key's), request ids (reused with the same or another body, another key's),
oversize bodies declared and chunked.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, REPLAYED_HEADER, REQUEST_ID_HEADER, Routes, WireTensor
from tests.helpers import KEYS, ServerProcess, random_images, tiny_argv

TOTAL = int(os.environ.get("BLACKVIP_ADVERSARIAL_REQUESTS", "10000"))
MAX_IMAGES, MAX_BYTES = 8, 120_000
KEY_HEADERS = {
    "alice": {"Authorization": f"Bearer {KEYS[0]}"},
    "bob": {"Authorization": f"Bearer {KEYS[1]}"},
}
BAD_AUTH = [
    {},
    {"Authorization": "Bearer nope"},
    {"Authorization": "Basic abc"},
    {"Authorization": "Bearer"},
]
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


@dataclass
class Book:
    """What the server answered, per key: what its usage must show."""

    requests: Counter = field(default_factory=Counter)  # (key, endpoint) -> answered, not replayed
    images: Counter = field(default_factory=Counter)  # key -> images answered, not replayed
    remembered: dict = field(default_factory=dict)  # (key, request id) -> (body digest, content)
    sent: int = 0  # hostile requests (the polite clients' are not counted here)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class World:
    url: str
    http: httpx.Client
    tasks: dict  # key -> own task id
    task_schema: dict
    book: Book


def endpoint_of(path: str, method: str) -> str | None:
    if method != "POST":
        return None
    if path == Routes.TASKS:
        return "tasks"
    for name in ("logits", "loss"):
        if path.startswith("/v1/tasks/") and path.endswith("/" + name):
            return name
    return None


def send(
    world: World, method: str, path: str, key: str | None, headers: dict, content, images: int, polite=False
) -> None:
    """One request; records what was answered and checks the server never fails or drops us."""
    auth = KEY_HEADERS.get(key, {}) if key else {}
    response = world.http.request(method, path, headers={**auth, **headers}, content=content)
    book = world.book
    with book.lock:
        book.sent += 0 if polite else 1
        book.statuses[("polite" if polite else "hostile", response.status_code)] += 1
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    if len(response.content) > 8192 and response.status_code >= 400:
        raise AssertionError(f"error body of {len(response.content)} bytes for {path}")
    endpoint = endpoint_of(path, method)
    if response.status_code != 200 or endpoint is None or key not in KEY_HEADERS:
        return
    rid = headers.get(REQUEST_ID_HEADER)
    digest = hashlib.sha256(
        f"{method} {path}".encode() + (content if isinstance(content, bytes) else b"")
    ).hexdigest()
    with book.lock:
        seen = book.remembered.get((key, rid)) if rid else None
        if seen is not None:  # a reuse that the server answered must be a replay of the same request
            assert response.headers.get(REPLAYED_HEADER) == "true" and seen == (digest, response.content)
            return
        assert REPLAYED_HEADER not in response.headers
        if rid:
            book.remembered[(key, rid)] = (digest, response.content)
        book.requests[(key, endpoint)] += 1
        book.images[key] += images


# -- strategies ------------------------------------------------------------------------------------


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values of a JSON schema of the kinds OpenAPI documents here use (objects, arrays, strings,
    numbers, booleans), honouring required keys, sizes and defaults."""
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: value for name, value in properties.items() if name in required},
            optional={name: value for name, value in properties.items() if name not in required},
        )
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})),
            min_size=schema.get("minItems", 0),
            max_size=schema.get("maxItems", schema.get("minItems", 0) + 6),
        )
    if kind == "string":
        # braces and format characters make templates interesting
        alphabet = st.characters(codec="utf-8") | st.sampled_from("{}{}:!>0 ")
        return st.text(alphabet, min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 40))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        return st.floats(allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    return st.none()


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=64),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5),
    max_leaves=20,
)  # fmt: skip


@st.composite
def tensor_maps(draw) -> tuple[dict, int]:
    """A tensor map, often almost right; and how many images a valid one holds."""
    n = draw(st.integers(0, MAX_IMAGES + 2))
    dtype = draw(st.sampled_from(["float32", "float16", "uint8", "int64", "float64", "bogus", ""]))
    size = draw(st.sampled_from([32, 32, 32, 16, 33]))
    shape = draw(
        st.sampled_from([[n, 3, size, size], [n, 1, size, size], [3, size, size], [n, 3, size, size, 1]])
    )
    valid_dtype = dtype if dtype in ("float32", "float16", "uint8") else "uint8"
    count = int(np.prod(shape)) if all(d >= 0 for d in shape) and np.prod(shape) < 10**6 else 0
    kind = draw(st.sampled_from(["fine", "fine", "nan", "inf", "high", "low", "short", "long"]))
    array = random_images(max(count, 1), valid_dtype, seed=draw(st.integers(0, 50)), size=1).reshape(-1)[
        :count
    ]
    if valid_dtype != "uint8" and kind in ("nan", "inf", "high", "low") and count:
        array = array.copy()
        array[draw(st.integers(0, count - 1))] = {"nan": np.nan, "inf": np.inf, "high": 1.5, "low": -0.5}[
            kind
        ]
    data = array.astype(valid_dtype).tobytes()
    if kind == "short":
        data = data[: max(0, len(data) - draw(st.integers(1, 9)))]
    elif kind == "long":
        data += b"\x00" * draw(st.integers(1, 9))
    if draw(st.booleans()) and draw(st.booleans()):
        shape = draw(st.lists(st.one_of(st.integers(-3, 2**40), st.text(max_size=3)), max_size=10))
    return {"shape": shape, "dtype": dtype, "data": data}, n


@st.composite
def batch_bodies(draw) -> tuple[bytes, int]:
    """A logits/loss body (possibly broken) and the images it would be charged for if valid."""
    form = draw(st.sampled_from(["tensor", "tensor", "tensor", "garbage", "truncated", "nested", "notmap"]))
    if form == "garbage":
        return draw(st.binary(max_size=200)), 0
    if form == "nested":
        return pack(draw(msgpack_values)), 0
    if form == "notmap":
        return pack([1, 2, 3]), 0
    tensor, n = draw(tensor_maps())
    labels = draw(
        st.one_of(
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.lists(st.integers(-5, 2**40), max_size=12),
            st.lists(st.text(max_size=3), max_size=4),
        )
    )
    payload = {"images": tensor, "labels": labels} if draw(st.booleans()) else {"images": tensor}
    if draw(st.booleans()):
        payload["loss"] = draw(st.sampled_from(["ce", "focal", "hinge", 3]))
        payload["focal_gamma"] = draw(st.one_of(st.floats(), st.integers(-3, 30)))
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.text(max_size=30))] = draw(msgpack_values)
    body = pack(payload)
    if form == "truncated":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))], 0
    return body, n


def pick_task(draw, world: World, key: str | None) -> str:
    choice = draw(st.sampled_from(["own", "own", "own", "other", "made-up", "long", "weird"]))
    if choice == "own" and key in world.tasks:
        return world.tasks[key]
    if choice == "other":
        return world.tasks["bob" if key == "alice" else "alice"]
    if choice == "long":
        return "task-" + "0" * draw(st.integers(100, 3000))
    if choice == "weird":
        return draw(st.sampled_from(["%00", "..%2F..", "task-%FF", "ta sk", "\u00e9"]))
    return "task-" + draw(st.text("0123456789abcdef", min_size=20, max_size=20))


def pick_request_id(draw, world: World, key: str | None) -> dict:
    choice = draw(st.sampled_from(["none", "fresh", "fresh", "reuse", "others", "bad"]))
    with world.book.lock:
        known = sorted({rid for (_, rid) in world.book.remembered}, key=repr)
    if choice == "fresh":
        return {REQUEST_ID_HEADER: f"f-{draw(st.integers(0, 2**62))}"}
    index = draw(st.integers(0, 2**16))  # drawn always: the known ids change between examples
    if choice in ("reuse", "others") and known:
        return {REQUEST_ID_HEADER: known[index % len(known)]}
    if choice == "bad":
        return {REQUEST_ID_HEADER: draw(st.sampled_from(["x" * 129, "a b", b"\xe9\xff"]))}
    return {}


def pick_key(draw) -> str | None:
    return draw(st.sampled_from(["alice", "alice", "bob", "bob", None]))


# -- the run ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("adversarial")
    argv = tiny_argv(
        tmp / "ledger.sqlite3",
        "--max-batch-images", str(MAX_IMAGES), "--max-request-bytes", str(MAX_BYTES),
        "--max-task-bytes", "20000", "--max-tasks-per-key", "200", "--rejection-flush-s", "0.5",
    )  # fmt: skip
    server = ServerProcess(
        argv, env={"BLACKVIP_API_KEYS": ",".join(KEYS)}, log_path=tmp / "server.log"
    ).start()
    http = httpx.Client(base_url=server.url, timeout=60.0)
    try:
        tasks = {}
        for key in KEY_HEADERS:
            response = http.post(
                Routes.TASKS, json={"class_names": ["a", "b", "c"]}, headers=KEY_HEADERS[key]
            )
            tasks[key] = response.json()["task_id"]
        book = Book()
        book.requests.update({(key, "tasks"): 1 for key in KEY_HEADERS})
        schema = http.get("/openapi.json").json()["paths"][Routes.TASKS]["post"]["requestBody"]
        task_schema = schema["content"]["application/json"]["schema"]
        yield World(server.url, http, tasks, task_schema, book), server
    finally:
        http.close()
        server.stop()


def valid_traffic(world: World, key: str, stop: threading.Event) -> None:
    """A polite client of ``key``: logits and loss with fresh ids, some sent twice (retries)."""
    rng = random.Random(key)
    path_for = {"logits": Routes.LOGITS, "loss": Routes.LOSS}
    while not stop.is_set():
        n = rng.randint(1, MAX_IMAGES)
        images = WireTensor.from_numpy(random_images(n, "uint8", seed=rng.randint(0, 99))).model_dump()
        endpoint = rng.choice(["logits", "loss"])
        payload = {"images": images} if endpoint == "logits" else {"images": images, "labels": [1] * n}
        headers = {"Content-Type": MSGPACK_CONTENT_TYPE, REQUEST_ID_HEADER: f"{key}-{rng.getrandbits(64)}"}
        body, path = pack(payload), path_for[endpoint].format(task_id=world.tasks[key])
        for _ in range(2 if rng.random() < 0.2 else 1):
            send(world, "POST", path, key, headers, body, n, polite=True)


def test_hostile_traffic_leaves_no_5xx_and_exact_counts(world) -> None:
    world, server = world
    share = TOTAL // 4

    @fuzz(2 * share)
    @given(st.data())
    def batches(data) -> None:
        key = pick_key(data.draw)
        body, n = data.draw(batch_bodies())
        endpoint = data.draw(st.sampled_from([Routes.LOGITS, Routes.LOSS]))
        path = endpoint.format(task_id=pick_task(data.draw, world, key))
        content_type = data.draw(
            st.sampled_from(
                [MSGPACK_CONTENT_TYPE] * 6 + ["application/json", "", "text/plain; x=" + "y" * 300]
            )
        )
        headers = {"Content-Type": content_type, **pick_request_id(data.draw, world, key)}
        if not headers["Content-Type"]:
            del headers["Content-Type"]
        send(world, "POST", path, key, headers, body, n)

    @fuzz(share)
    @given(st.data())
    def tasks(data) -> None:
        key = pick_key(data.draw)
        form = data.draw(st.sampled_from(["schema", "schema", "braces", "json", "raw"]))
        if form == "schema":
            body = pack_json(data.draw(from_schema(world.task_schema)))
        elif form == "braces":
            names = data.draw(st.lists(st.text(alphabet="ab{}:!0 >", max_size=12), min_size=1, max_size=4))
            templates = data.draw(
                st.lists(st.text(alphabet="ab{}:!0 >.x", max_size=14), min_size=1, max_size=3)
            )
            body = pack_json({"class_names": names, "templates": templates})
        elif form == "json":
            body = pack_json(
                data.draw(
                    st.recursive(
                        st.none() | st.integers() | st.text(max_size=10),
                        lambda c: st.lists(c, max_size=4),
                        max_leaves=10,
                    )
                )
            )
        else:
            body = data.draw(st.binary(max_size=100))
        headers = {
            "Content-Type": data.draw(st.sampled_from(["application/json"] * 4 + [MSGPACK_CONTENT_TYPE]))
        }
        send(world, "POST", Routes.TASKS, key, {**headers, **pick_request_id(data.draw, world, key)}, body, 0)

    @fuzz(share)
    @given(st.data())
    def odd_requests(data) -> None:
        key = pick_key(data.draw)
        method = data.draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST", "OPTIONS"]))
        path = data.draw(
            st.sampled_from(
                [Routes.INFO, Routes.USAGE, Routes.HEALTH, Routes.TASKS, "/v1/nope", "/", "/v1/tasks/x/y"]
            )
            | st.builds(lambda t: Routes.TASK.format(task_id=t), st.just(pick_task(data.draw, world, key)))
            | st.builds(lambda t: Routes.LOGITS.format(task_id=t), st.just(pick_task(data.draw, world, key)))
        )
        auth = data.draw(st.sampled_from(BAD_AUTH)) if key is None else {}
        body = data.draw(st.binary(max_size=50)) if method in ("POST", "PUT", "PATCH") else None
        send(world, method, path, key, {**auth, "Content-Type": MSGPACK_CONTENT_TYPE}, body, 0)

    stop = threading.Event()
    polite = [threading.Thread(target=valid_traffic, args=(world, key, stop)) for key in KEY_HEADERS]
    for thread in polite:
        thread.start()
    try:
        batches()
        tasks()
        odd_requests()
        oversize(world)
    finally:
        stop.set()
        for thread in polite:
            thread.join()

    book = world.book
    assert book.sent >= TOTAL, book.sent
    assert_healthy_and_charged_as_answered(world)
    log = server.log_tail()
    assert "Traceback" not in log
    print(f"adversarial: {book.sent} requests, statuses {dict(sorted(book.statuses.items()))}")


def assert_healthy_and_charged_as_answered(world: World) -> None:
    """Health ok, and each polite key's usage equals what the book says it was answered."""
    book = world.book
    assert world.http.get(Routes.HEALTH).json()["status"] == "ok"
    for key, headers in KEY_HEADERS.items():
        usage = world.http.get(Routes.USAGE, headers=headers).json()
        assert usage["total"]["images"] == book.images[key], (key, usage["total"], book.images[key])
        for endpoint in ("tasks", "logits", "loss"):
            served = usage["by_endpoint"].get(endpoint, {"requests": 0})["requests"]
            assert served == book.requests[(key, endpoint)], (key, endpoint, served)


def oversize(world: World) -> None:
    """Bodies over the limit, declared and streamed without a Content-Length."""
    big = b"\x00" * (MAX_BYTES + 1)
    path = Routes.LOGITS.format(task_id=world.tasks["alice"])
    for _ in range(20):
        send(world, "POST", path, "alice", {"Content-Type": MSGPACK_CONTENT_TYPE}, big, 0)
        chunks = iter([big[:65536], big[65536:]])
        send(world, "POST", path, "alice", {"Content-Type": MSGPACK_CONTENT_TYPE}, chunks, 0)


def pack_json(value: object) -> bytes:
    import json

    return json.dumps(value).encode()
