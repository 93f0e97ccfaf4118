"""The app factory: settings in, FastAPI app out. The model loads in the background during the
lifespan, so the health endpoint can answer 503 ("loading") until it is ready. On shutdown (SIGTERM)
uvicorn stops accepting and lets requests finish; the lifespan then waits up to the grace period for
charged calls still running in worker threads, writes the pending rejection counts, and only then
closes the ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.admission import RequestBudget, task_or_batch_limit
from server.api.auth import KeyRing, keep_keys_fresh
from server.api.docs import install_docs
from server.api.metrics import install_metrics
from server.api.openapi import describe_msgpack_models
from server.api.routes import router
from server.api.state import AppState
from server.api.unexpected import AnswerUnexpectedErrors
from server.errors import APIError, bounded_body, error_responses, problems, retry_after_value
from server.ledger import Ledger, LedgerLimits, LedgerUnavailableError
from server.ledger.schema import SchemaError
from server.metrics import ServerMetrics
from server.serving.clip_model import ClipBackend
from server.serving.service import QueryService
from server.settings import ServerSettings, ledger_label
from shared.protocol import ERROR_STATUS, PROTOCOL_VERSION, ErrorCode

__all__ = ["create_app", "ledger_limits"]

log = logging.getLogger(__name__)

# Starlette's own HTTP errors (unknown route, wrong method, ...) in our codes, found by the status the
# shared table gives each code; other 4xx are bad requests.
_HTTP_CODES = {
    ERROR_STATUS[code]: code
    for code in (
        ErrorCode.UNAUTHORIZED,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.BODY_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.VALIDATION_ERROR,
    )
}
_PRUNE_EVERY_S = 60.0
LEDGER_RETRY_AFTER_S = 2.0


def ledger_limits(settings: ServerSettings) -> LedgerLimits:
    return LedgerLimits(
        quota_images=settings.quota_images,
        max_tasks_per_key=settings.max_tasks_per_key,
        max_task_store_bytes_per_key=settings.max_task_store_bytes_per_key,
        idempotency_window_s=settings.idempotency_window_s,
        replay_ttl_s=settings.replay_ttl,
        replay_store_bytes=int(settings.replay_store_mb * 2**20),
        replay_store_key_share=settings.replay_store_key_share,
        busy_timeout_s=settings.ledger_busy_timeout_s,
        pool_size=settings.ledger_pool_size,
    )


def create_app(settings: ServerSettings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """``on_fatal`` is called with a message if the model or the ledger cannot be opened."""
    keyring = KeyRing(settings.api_key_hashes, require_keys=settings.ledger_keys)
    state = AppState(settings=settings, keyring=keyring, on_fatal=on_fatal)
    if settings.metrics:
        state.metrics = ServerMetrics(queue_depth=lambda: _queued_images(state))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        on_commit = state.metrics.ledger_commit if state.metrics is not None else None
        try:
            state.ledger = Ledger(settings.ledger, ledger_limits(settings), on_commit)
            keyring.refresh(state.ledger.keys.load())
        except (SchemaError, LedgerUnavailableError, OSError) as exc:
            _fatal(state, f"cannot open the ledger {ledger_label(settings.ledger)}: {exc}")
            raise
        if not keyring.auth_required:
            log.warning("no API keys configured: the API is open and all usage is charged to 'anonymous'")
        loader = asyncio.create_task(_load_model(state))
        upkeep = asyncio.create_task(_keep_ledger(state))
        keys = asyncio.create_task(keep_keys_fresh(keyring, state.ledger.keys, settings.keys_refresh_s))
        try:
            yield
        finally:
            loader.cancel()
            upkeep.cancel()
            keys.cancel()
            await _drain_and_close(state)
            state.control.shutdown(wait=False)

    # /docs is served from an installed package (server.api.docs), not FastAPI's CDN page; no ReDoc.
    app = FastAPI(
        title="blackvip-sim CLIP service",
        version=PROTOCOL_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.blackvip = state
    # The handler of anything unexpected (below) can answer any route.
    app.include_router(router, responses=error_responses(ErrorCode.INTERNAL_ERROR))
    describe_msgpack_models(app)
    install_docs(app)
    _install_error_handlers(app, state)  # before the metrics middleware, which then wraps it
    # outside the app's handlers, inside the metrics (which count its 503s on the unmatched route)
    limit = task_or_batch_limit(settings.max_task_bytes, settings.max_request_bytes)
    app.add_middleware(RequestBudget, budget=state.memory, route_limit=limit)
    if state.metrics is not None:
        install_metrics(app, state.metrics)
    return app


def _queued_images(state: AppState) -> int:
    batcher = state.service.batcher if state.service is not None else None
    return batcher.queued_images if batcher is not None else 0


def _fatal(state: AppState, message: str) -> None:
    log.error("%s", message)
    if state.on_fatal is not None:
        state.on_fatal(message)


async def _load_model(state: AppState) -> None:
    assert state.ledger is not None
    try:
        backend = await asyncio.to_thread(ClipBackend.load, state.settings)
        # in a thread too: it checks the forward sizes on the model (seconds for a large one on CPU)
        service = await asyncio.to_thread(QueryService, state.settings, backend, state.ledger, state.metrics)
    except Exception as exc:  # any failure must reach the operator, not hang the health check
        state.load_error = f"{type(exc).__name__}: {exc}"
        _fatal(state, f"model failed to load: {state.load_error}")
        return
    state.service = service
    log.info("ready: serving %s", state.settings.model)


async def _keep_ledger(state: AppState) -> None:
    """Every few seconds: write the rejection counts, prove the ledger commits, prune old ids."""
    assert state.ledger is not None
    ledger, last_prune = state.ledger, 0.0
    while True:
        await asyncio.sleep(state.settings.rejection_flush_s)
        prune = time.monotonic() - last_prune >= _PRUNE_EVERY_S
        try:
            await asyncio.to_thread(_upkeep, state, ledger, prune)
        except LedgerUnavailableError as exc:
            log.warning("ledger upkeep failed (health reports degraded): %s", exc)
        else:
            last_prune = time.monotonic() if prune else last_prune


def _upkeep(state: AppState, ledger: Ledger, prune: bool) -> None:
    state.rejections.flush(ledger)
    if prune:
        ledger.prune()
    ledger.heartbeat()


async def _drain_and_close(state: AppState) -> None:
    if state.ledger is None:
        return
    if state.service is not None:
        grace = state.settings.shutdown_grace_s
        if not await asyncio.to_thread(state.service.idempotency.wait_idle, grace):
            log.warning("shutdown: charged calls still running after %.0f s; closing the ledger", grace)
        await asyncio.to_thread(state.service.close, grace)
    await asyncio.to_thread(state.rejections.flush, state.ledger)
    state.ledger.close()


def _install_error_handlers(app: FastAPI, state: AppState) -> None:
    def reply(request: Request, exc: APIError) -> JSONResponse:
        # Counted in memory (no write, no lock shared with charges); labels are our own vocabulary.
        route = request.scope.get("route")
        key_id = getattr(request.state, "key_id", None)
        state.rejections.add(key_id, getattr(route, "path", None), exc.status, exc.code.value)
        if state.metrics is not None:
            state.metrics.rejected_request(exc.code)
        headers = {"Retry-After": retry_after_value(exc.retry_after)} if exc.retry_after else {}
        if exc.close_connection:
            headers["Connection"] = "close"  # uvicorn then closes the connection after the answer
        body = bounded_body(exc.code, exc.message, exc.detail)
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return reply(request, exc)

    @app.exception_handler(LedgerUnavailableError)
    async def ledger_unavailable(request: Request, exc: LedgerUnavailableError) -> JSONResponse:
        log.warning("ledger unavailable on %s: %s", request.url.path, exc)
        message = "the query ledger is unavailable; nothing was charged or answered, retry shortly"
        return reply(
            request, APIError(ErrorCode.LEDGER_UNAVAILABLE, message, retry_after=LEDGER_RETRY_AFTER_S)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": str(e["msg"])} for e in exc.errors()]
        return reply(request, APIError(ErrorCode.VALIDATION_ERROR, "invalid request", problems(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fallback = ErrorCode.MALFORMED_BODY if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
        code = _HTTP_CODES.get(exc.status_code, fallback)
        return reply(request, APIError(code, str(exc.detail)))

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
        return reply(request, APIError(ErrorCode.INTERNAL_ERROR, message))

    # inside the metrics middleware (added after it), which then counts the 500
    app.add_middleware(AnswerUnexpectedErrors, answer=unexpected)

    @app.exception_handler(Exception)  # what escapes the above: an error after the answer had started
    async def unexpected_late(request: Request, exc: Exception) -> JSONResponse:
        return unexpected(request, exc)
