"""The app factory: settings in, FastAPI app out. The model loads in the background during the
lifespan, so the health endpoint can answer 503 ("loading") until it is ready."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.auth import KeyRing
from server.clip_model import ClipBackend
from server.errors import APIError
from server.ledger import Ledger
from server.routes import router
from server.service import QueryService
from server.settings import ServerSettings
from server.state import AppState
from shared.protocol import PROTOCOL_VERSION, ErrorBody, ErrorCode, ErrorDetail

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
}


def create_app(settings: ServerSettings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """``on_fatal`` is called with a message if the model cannot be loaded (the CLI exits then)."""
    state = AppState(settings=settings, keyring=KeyRing(settings.api_key_hashes), on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.ledger = Ledger(settings.ledger)
        loader = asyncio.create_task(_load_model(state))
        try:
            yield
        finally:
            loader.cancel()
            state.ledger.close()

    app = FastAPI(title="blackvip-sim CLIP service", version=PROTOCOL_VERSION, lifespan=lifespan)
    app.state.blackvip = state
    app.include_router(router)
    _install_error_handlers(app, state)
    if not state.keyring.auth_required:
        log.warning("no API keys configured: the API is open and all usage is charged to 'anonymous'")
    return app


async def _load_model(state: AppState) -> None:
    try:
        backend = await asyncio.to_thread(ClipBackend.load, state.settings)
    except Exception as exc:  # any failure must reach the operator, not hang the health check
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model failed to load: %s", state.load_error)
        if state.on_fatal is not None:
            state.on_fatal(state.load_error)
        return
    assert state.ledger is not None
    state.service = QueryService(state.settings, backend, state.ledger)
    log.info("ready: serving %s", state.settings.model)


def _install_error_handlers(app: FastAPI, state: AppState) -> None:
    async def reply(request: Request, status: int, detail: ErrorDetail) -> JSONResponse:
        if state.ledger is not None and (status < 500 or status == 503):
            key_id = getattr(request.state, "key_id", None)
            route = request.scope.get("route")
            endpoint = getattr(route, "path", request.url.path)
            await run_in_threadpool(
                state.ledger.record_rejection, key_id, endpoint, status, detail.code.value
            )
        body = ErrorBody(error=detail).model_dump(mode="json")
        return JSONResponse(body, status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return await reply(
            request, exc.status, ErrorDetail(code=exc.code, message=exc.message, detail=exc.detail)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        return await reply(
            request,
            422,
            ErrorDetail(
                code=ErrorCode.VALIDATION_ERROR, message="invalid request", detail={"errors": errors}
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
        return await reply(request, exc.status_code, ErrorDetail(code=code, message=str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return await reply(
            request,
            500,
            ErrorDetail(code=ErrorCode.INTERNAL_ERROR, message=f"internal error: {type(exc).__name__}"),
        )
