"""Metrics over HTTP: the middleware that counts and times every request, and ``GET /metrics``.

A request is labelled by the template of the route that answered it (``/v1/tasks/{task_id}/loss``),
never by its raw path: an unknown path is ``unmatched``, and a method outside the standard few is
``other``, so a client cannot mint label values. ``/metrics`` needs no API key, as the health check:
its labels hold no key, task or request ids, only aggregate counts (docs/server.md: Metrics).
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.rejections import UNMATCHED_ROUTE
from server.metrics import ServerMetrics

__all__ = ["METRICS_PATH", "OTHER_METHOD", "RequestMetrics", "install_metrics", "method_label", "route_label"]

METRICS_PATH = "/metrics"
OTHER_METHOD = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's template (a mount's is ``/prefix/{path}``), else ``unmatched``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


def method_label(method: str) -> str:
    return method if method in _METHODS else OTHER_METHOD


class RequestMetrics:
    """Pure ASGI (no BaseHTTPMiddleware): the request body streams through untouched, so the body
    limits of ``server.api.body`` and a client's disconnect are seen exactly as without it."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes is answered 500 by Starlette's outermost handler
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            self.metrics.request_done(route_label(scope), method_label(scope["method"]), status, elapsed)


def install_metrics(app: FastAPI, metrics: ServerMetrics) -> None:
    """Count and time every request of ``app`` and serve the exposition text at ``/metrics``."""
    app.add_middleware(RequestMetrics, metrics=metrics)

    async def scrape(request: Request) -> Response:  # on the event loop: never behind the model's queue
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    app.add_api_route(
        METRICS_PATH,
        scrape,
        methods=["GET"],
        summary="Prometheus metrics",
        description="Prometheus text, or OpenMetrics if Accept asks for it; no API key (aggregate counts).",
        response_class=Response,
        responses={
            200: {
                "description": "the exposition of every metric",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                },
            }
        },
    )
