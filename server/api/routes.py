"""HTTP endpoints. Thin: authenticate, read and check the body, then hand the blocking work
(model forwards, ledger commits) to a worker thread so the event loop never runs the model. Health
runs on the event loop itself, so a busy worker pool cannot make it time out. Each route documents
the error codes its steps can answer with (``error_responses``); the app adds its own handlers'."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from server.api.batch import BatchCall, serve_batch
from server.api.body import read_body
from server.api.info import info_response
from server.api.inputs import parse_json
from server.api.openapi import json_body, msgpack_answer, msgpack_body
from server.api.rate_limit import rate_limited
from server.api.security import KeyScheme
from server.api.state import AppState
from server.api.usage import usage_by_period, usage_from_ledger
from server.errors import APIError, error_responses
from server.ledger import Ledger
from server.serving.access_policy import refuse_route, refuse_unoffered_level
from server.serving.idempotency import Served, charge_for
from server.serving.service import QueryService, task_response
from server.serving.tasks import check_task
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    Endpoint,
    ErrorCode,
    HealthResponse,
    InfoResponse,
    LogitsRequest,
    LogitsResponse,
    LossRequest,
    LossResponse,
    Routes,
    TaskRequest,
    TaskResponse,
    UsagePeriodName,
    UsagePeriodsResponse,
    UsageResponse,
)

__all__ = ["router"]


router = APIRouter()

# What each step can answer with. Keyed: authenticate (FastAPI validates its header), ready_service.
_KEYED = (ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED, ErrorCode.VALIDATION_ERROR, ErrorCode.NOT_READY)
_LEDGER = (ErrorCode.LEDGER_UNAVAILABLE,)  # any read or write of the ledger
_BODY = (  # the memory budget (server.api.admission), read_body, then parse_json / parse_msgpack
    ErrorCode.SERVER_BUSY,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.BODY_TOO_LARGE,
    ErrorCode.MALFORMED_BODY,
    ErrorCode.TOO_MANY_UPLOADS,
    ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.CLIENT_DISCONNECTED,
    ErrorCode.VALIDATION_ERROR,
)
_CHARGED = (  # request_id, then the idempotency protocol and the charge
    *_LEDGER,
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.REQUEST_IN_PROGRESS,
    ErrorCode.IDEMPOTENCY_MISMATCH,
    ErrorCode.REPLAY_EXPIRED,
)
_BATCH = (  # _batch_call (the task, its level), serve_batch (check_images) and the forward
    ErrorCode.NOT_FOUND,
    ErrorCode.ACCESS_DENIED,
    ErrorCode.TOO_MANY_IMAGES,
    ErrorCode.INVALID_TENSOR,
    ErrorCode.INVALID_VALUES,
    ErrorCode.QUOTA_EXCEEDED,
    ErrorCode.QUEUE_FULL,
)


async def get_state(request: Request) -> AppState:
    return request.app.state.blackvip


State = Annotated[AppState, Depends(get_state)]


class _Authenticate(KeyScheme):
    """The key check, documented as the bearer scheme on every route that depends on it."""

    async def __call__(
        self,
        request: Request,
        state: State,
        # the scheme documents the header: not also a field of each route
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> str:
        identity = state.keyring.identify(authorization)
        request.state.key_id = identity.key_id  # lets the error handler count rejections for the right key
        if identity.rate_per_s is not None:  # before the body is read: a refused request costs nothing
            wait_s = state.limiter.take(identity.key_id, identity.rate_per_s)
            if wait_s > 0:
                raise rate_limited(identity.rate_per_s, wait_s)
        return identity.key_id


authenticate = _Authenticate()

KeyId = Annotated[str, Depends(authenticate)]


async def ready_service(state: State, _key: KeyId) -> QueryService:
    if state.service is None:
        message = "the model failed to load" if state.load_error else "the model is still loading"
        raise APIError(ErrorCode.NOT_READY, f"{message}; retry shortly", retry_after=2.0)
    return state.service


Service = Annotated[QueryService, Depends(ready_service)]


async def request_id(
    x_request_id: Annotated[str | None, Header(alias=REQUEST_ID_HEADER)] = None,
) -> str | None:
    if x_request_id is not None and not (1 <= len(x_request_id) <= 128 and x_request_id.isprintable()):
        raise APIError(ErrorCode.VALIDATION_ERROR, f"{REQUEST_ID_HEADER} must be 1-128 printable characters")
    return x_request_id


RequestId = Annotated[str | None, Depends(request_id)]


def served_response(served: Served) -> Response:
    headers = {REPLAYED_HEADER: "true"} if served.replayed else None
    return Response(served.answer.content, media_type=served.answer.media_type, headers=headers)


async def _body(
    request: Request, state: AppState, key_id: str, content_type: str, limit: int
) -> bytes | bytearray:
    timeout_s = state.settings.body_timeout_s
    return await read_body(request, content_type, limit, key_id, state.uploads, timeout_s)


async def _batch_call(
    request: Request,
    state: AppState,
    service: QueryService,
    key_id: str,
    task_id: str,
    rid: str | None,
    endpoint: Endpoint,
) -> BatchCall:
    """The task (known to this process: no worker thread), then the body: what ``serve_batch`` needs.
    A route the task's level does not answer is refused before its body is read."""
    task = service.known_tasks.get(key_id, task_id)
    if task is None:
        task = await run_in_threadpool(service.get_task, key_id, task_id)
    refuse_route(task.access, endpoint)
    body = await _body(request, state, key_id, MSGPACK_CONTENT_TYPE, state.settings.max_request_bytes)
    return BatchCall(key_id, rid, request.method, request.url.path, task, body)


@router.get(
    Routes.HEALTH,
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "loading, failed, or degraded (the ledger)"}},
)
async def health(state: State) -> JSONResponse:
    # The reason a model failed to load is in the server's log and in /v1/info's 503 for a key
    # holder: paths and library messages are not for anonymous callers.
    if state.service is not None and state.ledger is not None and not state.ledger.healthy:
        body, status = HealthResponse(status="degraded", detail="the query ledger cannot commit"), 503
    elif state.service is not None:
        body, status = HealthResponse(status="ok"), 200
    elif state.load_error is not None:
        body, status = HealthResponse(status="failed", detail="the model failed to load"), 503
    else:
        body, status = HealthResponse(status="loading"), 503
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


@router.get(Routes.INFO, responses=error_responses(*_KEYED))
async def info(state: State, service: Service) -> InfoResponse:
    return info_response(state, service)


@router.post(
    Routes.TASKS,
    response_model=TaskResponse,
    openapi_extra=json_body(TaskRequest),
    responses=error_responses(
        *_KEYED, *_BODY, *_CHARGED, ErrorCode.TASK_LIMIT_REACHED, ErrorCode.ACCESS_DENIED
    ),
)
async def register_task(
    request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> Response:
    limits = state.settings.task_limits
    body = await _body(request, state, key_id, "application/json", limits.max_task_bytes)
    task_request = await run_in_threadpool(parse_json, body, TaskRequest)
    check_task(task_request, limits)  # before any text is formatted or tokenised
    refuse_unoffered_level(task_request.access, state.settings.access_levels)
    charge = charge_for(key_id, Endpoint.TASKS, rid, request.method, request.url.path, body)
    served = await run_in_threadpool(
        service.idempotency.serve, charge, partial(service.register_task, task_request, key_id)
    )
    return served_response(served)


@router.get(Routes.TASK, responses=error_responses(*_KEYED, *_LEDGER, ErrorCode.NOT_FOUND))
def get_task(task_id: str, service: Service, key_id: KeyId) -> TaskResponse:
    return task_response(service.get_task(key_id, task_id))


@router.post(
    Routes.LOGITS,
    response_class=Response,  # the answer is msgpack: no JSON answer is documented
    openapi_extra=msgpack_body(LogitsRequest),
    responses={**msgpack_answer(LogitsResponse), **error_responses(*_KEYED, *_BODY, *_CHARGED, *_BATCH)},
)
async def logits(
    task_id: str, request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> Response:
    call = await _batch_call(request, state, service, key_id, task_id, rid, Endpoint.LOGITS)
    return served_response(await run_in_threadpool(serve_batch, service, call, Endpoint.LOGITS))


@router.post(
    Routes.LOSS,
    response_class=Response,
    openapi_extra=msgpack_body(LossRequest),
    responses={
        **msgpack_answer(LossResponse),
        **error_responses(*_KEYED, *_BODY, *_CHARGED, *_BATCH, ErrorCode.INVALID_LABELS),
    },
)
async def loss(
    task_id: str, request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> Response:
    call = await _batch_call(request, state, service, key_id, task_id, rid, Endpoint.LOSS)
    return served_response(await run_in_threadpool(serve_batch, service, call, Endpoint.LOSS))


async def open_ledger(state: State) -> Ledger:
    if state.ledger is None:
        raise APIError(ErrorCode.NOT_READY, "the ledger is not open yet", retry_after=2.0)
    return state.ledger


OpenLedger = Annotated[Ledger, Depends(open_ledger)]


@router.get(Routes.USAGE, responses=error_responses(*_KEYED, *_LEDGER))
async def usage(state: State, key_id: KeyId, ledger: OpenLedger) -> UsageResponse:
    settings = state.settings
    return await state.run_control(
        usage_from_ledger,
        ledger,
        state.rejections,
        key_id,
        settings.price_per_1k_images,
        settings.price_per_1k_texts,
    )


@router.get(Routes.USAGE_PERIODS, responses=error_responses(*_KEYED, *_LEDGER))
async def usage_periods(
    state: State,
    key_id: KeyId,
    ledger: OpenLedger,
    by: UsagePeriodName = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsagePeriodsResponse:
    """This key's charged requests, images and cost per UTC hour or day, in ``[since, until)``
    (ISO 8601; a time without a zone is UTC)."""
    return await state.run_control(usage_by_period, ledger, key_id, by, since, until)
