"""HTTP endpoints. Thin: authenticate, read and check the body, then hand the blocking work
(model forwards, ledger commits) to a worker thread so the event loop never runs the model."""

from __future__ import annotations

from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from server.errors import APIError
from server.http_body import read_body
from server.inputs import check_images, check_labels, parse_msgpack
from server.ledger import StoredTask
from server.service import Charge, QueryService, usage_from_ledger
from server.state import AppState
from shared.codec import ACCEPTED_IMAGE_DTYPES, OUTPUT_DTYPE, pack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    PROTOCOL_VERSION,
    REQUEST_ID_HEADER,
    ErrorCode,
    HealthResponse,
    InfoResponse,
    LogitsRequest,
    LogitsResponse,
    LossKind,
    LossRequest,
    LossResponse,
    Routes,
    TaskRequest,
    TaskResponse,
    UsageResponse,
    WireTensor,
)

__all__ = ["router"]

BatchRequest = TypeVar("BatchRequest", LogitsRequest, LossRequest)

router = APIRouter()


def get_state(request: Request) -> AppState:
    return request.app.state.blackvip


State = Annotated[AppState, Depends(get_state)]


def authenticate(
    request: Request, state: State, authorization: Annotated[str | None, Header()] = None
) -> str:
    key_id = state.keyring.identify(authorization)
    request.state.key_id = key_id  # lets the error handler charge rejections to the right key
    return key_id


KeyId = Annotated[str, Depends(authenticate)]


def ready_service(state: State, _key: KeyId) -> QueryService:
    if state.service is None:
        message = state.load_error or "the model is still loading; retry shortly"
        raise APIError(503, ErrorCode.NOT_READY, message)
    return state.service


Service = Annotated[QueryService, Depends(ready_service)]


def request_id(x_request_id: Annotated[str | None, Header(alias=REQUEST_ID_HEADER)] = None) -> str | None:
    if x_request_id is not None and not 1 <= len(x_request_id) <= 128:
        raise APIError(422, ErrorCode.VALIDATION_ERROR, f"{REQUEST_ID_HEADER} must be 1-128 characters")
    return x_request_id


RequestId = Annotated[str | None, Depends(request_id)]


def msgpack_response(model: LogitsResponse | LossResponse) -> Response:
    return Response(pack(model.model_dump()), media_type=MSGPACK_CONTENT_TYPE)


def _task_response(task: StoredTask) -> TaskResponse:
    return TaskResponse(
        task_id=task.task_id,
        num_classes=len(task.class_names),
        class_names=task.class_names,
        templates=task.templates,
    )


async def _read_batch(
    request: Request,
    state: AppState,
    service: QueryService,
    key_id: str,
    task_id: str,
    model: type[BatchRequest],
) -> tuple[StoredTask, int, BatchRequest, np.ndarray]:
    """The task, the body size, the parsed request and its checked images (N, 3, S, S)."""
    task = await run_in_threadpool(service.get_task, key_id, task_id)
    body = await read_body(request, MSGPACK_CONTENT_TYPE, state.settings.max_request_bytes)
    parsed = await run_in_threadpool(parse_msgpack, body, model)
    images = await run_in_threadpool(
        check_images, parsed.images, service.backend.image_size, state.settings.max_batch_images
    )
    return task, len(body), parsed, images


@router.get(Routes.HEALTH, response_model=HealthResponse)
def health(state: State) -> JSONResponse:
    if state.service is not None:
        body, status = HealthResponse(status="ok"), 200
    elif state.load_error is not None:
        body, status = HealthResponse(status="failed", detail=state.load_error), 503
    else:
        body, status = HealthResponse(status="loading"), 503
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


@router.get(Routes.INFO)
def info(state: State, service: Service) -> InfoResponse:
    settings, backend = state.settings, service.backend
    return InfoResponse(
        protocol_version=PROTOCOL_VERSION,
        model=settings.model,
        pretrained=settings.weights_label,
        image_size=backend.image_size,
        mean=backend.mean,
        std=backend.std,
        accepted_dtypes=list(ACCEPTED_IMAGE_DTYPES),
        output_dtype=OUTPUT_DTYPE,
        losses=[kind.value for kind in LossKind],
        max_batch_images=settings.max_batch_images,
        max_request_bytes=settings.max_request_bytes,
        price_per_1k_images=settings.price_per_1k_images,
        quota_images=settings.quota_images,
        auth_required=state.keyring.auth_required,
    )


@router.post(Routes.TASKS)
async def register_task(
    request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> TaskResponse:
    body = await read_body(request, "application/json", state.settings.max_request_bytes)
    try:
        task_request = TaskRequest.model_validate_json(body)
    except ValueError as exc:
        raise APIError(422, ErrorCode.VALIDATION_ERROR, f"invalid task: {exc}") from exc
    charge = Charge(key_id, "tasks", rid, len(body))
    task = await run_in_threadpool(service.register_task, task_request, charge)
    return _task_response(task)


@router.get(Routes.TASK)
def get_task(task_id: str, service: Service, key_id: KeyId) -> TaskResponse:
    task = service.get_task(key_id, task_id)
    return _task_response(task)


@router.post(Routes.LOGITS)
async def logits(
    task_id: str, request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> Response:
    task, size, _, images = await _read_batch(request, state, service, key_id, task_id, LogitsRequest)
    result = await run_in_threadpool(service.logits, task, images, Charge(key_id, "logits", rid, size))
    return msgpack_response(LogitsResponse(logits=WireTensor.from_numpy(result.logits)))


@router.post(Routes.LOSS)
async def loss(
    task_id: str, request: Request, state: State, service: Service, key_id: KeyId, rid: RequestId
) -> Response:
    task, size, parsed, images = await _read_batch(request, state, service, key_id, task_id, LossRequest)
    labels = check_labels(parsed.labels, len(images), len(task.class_names))
    losses, correct = await run_in_threadpool(
        service.loss,
        task,
        images,
        labels,
        parsed.loss.value,
        parsed.focal_gamma,
        Charge(key_id, "loss", rid, size),
    )
    return msgpack_response(LossResponse(losses=WireTensor.from_numpy(losses), correct=correct.tolist()))


@router.get(Routes.USAGE)
async def usage(state: State, key_id: KeyId) -> UsageResponse:
    if state.ledger is None:
        raise APIError(503, ErrorCode.NOT_READY, "the ledger is not open yet")
    return await run_in_threadpool(
        usage_from_ledger, state.ledger, key_id, state.settings.price_per_1k_images
    )
