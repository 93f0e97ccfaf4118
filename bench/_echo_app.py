"""The framework's floor for bench/serving_overhead.py: bare Starlette on uvicorn that reads a msgpack
body, unpacks it and answers a small msgpack body. No model, no ledger, no validation.

    taskset -c 0 python -m uvicorn --app-dir bench _echo_app:app --port 8001

Imported by uvicorn as ``_echo_app`` (the benchmark puts ``bench/`` on its app dir)."""

from __future__ import annotations

import msgpack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["app"]

ANSWER = msgpack.packb({"logits": {"dtype": "float32", "shape": [4, 10], "data": bytes(160)}})


async def echo(request: Request) -> Response:
    body = await request.body()
    unpacked = msgpack.unpackb(body)
    return Response(ANSWER if unpacked else b"", media_type="application/msgpack")


async def health(_: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/health", health)])
