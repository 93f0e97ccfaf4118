"""A typed client for the black-box CLIP service, over httpx.

Every call that the server charges (task registration, logits, loss) goes through ``_charged`` and is
tallied in one :class:`QueryMeter`. A charged call carries one request id across its retries, so a
response lost in transit is never charged twice by the server.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from client._exceptions import (
    APIStatusError,
    GatewayError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    RequestInProgressError,
    RequestTimeoutError,
    ServerUnavailableError,
    TransportError,
    error_for_status,
)
from client._meter import QueryMeter
from client._outputs import Outputs, outputs_from
from client._retry import RetryPolicy
from shared.access import Access
from shared.codec import CodecError, pack, unpack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    PROTOCOL_VERSION,
    REQUEST_ID_HEADER,
    Endpoint,
    ErrorBody,
    HealthResponse,
    InfoResponse,
    LogitsRequest,
    LogitsResponse,
    LossKind,
    LossRequest,
    LossResponse,
    RequestPrecision,
    Routes,
    TaskRequest,
    TaskResponse,
    UsagePeriodName,
    UsagePeriodsResponse,
    UsageResponse,
    WireTensor,
)

__all__ = ["BlackVIPClient", "LossResult", "Outputs"]

RequestModel = TypeVar("RequestModel", TaskRequest, LogitsRequest, LossRequest)

log = logging.getLogger(__name__)

# Worth another attempt under the same request id; anything else is raised at once.
_RETRIED = (
    ServerUnavailableError,
    RequestInProgressError,
    RateLimitedError,
    GatewayError,
    RequestTimeoutError,
)


@dataclass(frozen=True)
class LossResult:
    losses: np.ndarray  # (N,) float32
    correct: np.ndarray  # (N,) bool


class BlackVIPClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        meter: QueryMeter | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retry = retry or RetryPolicy()
        self.meter = meter or QueryMeter()
        self._info: InfoResponse | None = None

    def __enter__(self) -> BlackVIPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> HealthResponse:
        """One attempt, no retry: for polling. Raises TransportError if nothing answers."""
        try:
            response = self._http.get(Routes.HEALTH)
        except httpx.TransportError as exc:
            raise TransportError(f"no answer from {self._http.base_url}: {exc}") from exc
        return _parse_json(response, HealthResponse)

    def info(self) -> InfoResponse:
        """The served model's input contract; checked against this client's protocol version."""
        info = _parse_json(self._send("GET", Routes.INFO), InfoResponse)
        if info.protocol_version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise ProtocolError(
                f"server speaks protocol {info.protocol_version}; this client speaks {PROTOCOL_VERSION}"
            )
        self._info = info
        return info

    def register_task(
        self, class_names: list[str], templates: list[str] | None = None, access: Access | None = None
    ) -> TaskResponse:
        """A task over ``class_names``; ``access`` (protocol 1.6+) says what its answers reveal. The
        default level (logits, no blurs) sends no field, so a server older than 1.6 accepts the request."""
        fields: dict[str, Any] = {"templates": templates} if templates else {}
        if access is not None and access != Access():
            fields["access"] = access
        request = _build(TaskRequest, class_names=class_names, **fields)
        body = request.model_dump_json(exclude=None if "access" in fields else {"access"}).encode()
        response = self._charged(Endpoint.TASKS, Routes.TASKS, body, "application/json", images=0)
        return _parse_json(response, TaskResponse)

    def get_task(self, task_id: str) -> TaskResponse:
        return _parse_json(self._send("GET", Routes.TASK.format(task_id=task_id)), TaskResponse)

    def logits(
        self, task_id: str, images: np.ndarray, precision: RequestPrecision | str | None = None
    ) -> np.ndarray:
        """Logits (N, C) float32 for images (N, 3, H, W): float32/float16 in [0, 1] or uint8, of a task
        at access level logits (another level's answer raises ProtocolError: use ``outputs``).
        ``precision`` "fp32" asks float32 forwards of a server that serves at fp16/bf16 (evaluation);
        None or "serving" sends no field, so a server older than protocol 1.5 accepts the request."""
        outputs = self.outputs(task_id, images, precision)
        if outputs.logits is None:
            level = outputs.level.value if outputs.level is not None else "unknown"
            raise ProtocolError(
                f"task {task_id} answered no logits: it is at access level {level}; use outputs()"
            )
        return outputs.logits

    def outputs(
        self, task_id: str, images: np.ndarray, precision: RequestPrecision | str | None = None
    ) -> Outputs:
        """What the logits route reveals of the images at the task's access level (``shared.access``):
        logits, probabilities, top-k classes and probabilities, or labels (``precision``: as ``logits``)."""
        images = np.asarray(images)
        request = _build(LogitsRequest, images=WireTensor.from_numpy(images), **_precision(precision))
        body = pack(_dump(request))
        path = Routes.LOGITS.format(task_id=task_id)
        response = self._charged(Endpoint.LOGITS, path, body, MSGPACK_CONTENT_TYPE, images=len(images))
        parsed = _parse_msgpack(response, LogitsResponse)
        try:
            return outputs_from(parsed, lambda wire: _decode(response, LogitsResponse, wire))
        except ValueError as exc:
            raise _not_a(response, LogitsResponse, exc) from exc

    def loss(
        self,
        task_id: str,
        images: np.ndarray,
        labels: np.ndarray | list[int],
        loss: LossKind | str = LossKind.CROSS_ENTROPY,
        focal_gamma: float = 2.0,
        precision: RequestPrecision | str | None = None,
    ) -> LossResult:
        """Per-image loss (N,) and whether each image was classified correctly (``precision``: as
        ``logits``)."""
        images = np.asarray(images)
        request = _build(
            LossRequest,
            images=WireTensor.from_numpy(images),
            labels=[int(label) for label in np.asarray(labels).reshape(-1)],
            loss=LossKind(loss),
            focal_gamma=float(focal_gamma),
            **_precision(precision),
        )
        path = Routes.LOSS.format(task_id=task_id)
        response = self._charged(Endpoint.LOSS, path, pack(_dump(request)), MSGPACK_CONTENT_TYPE, len(images))
        parsed = _parse_msgpack(response, LossResponse)
        return LossResult(
            losses=_decode(response, LossResponse, parsed.losses),
            correct=np.asarray(parsed.correct, dtype=bool),
        )

    def usage(self) -> UsageResponse:
        return _parse_json(self._send("GET", Routes.USAGE), UsageResponse)

    def usage_by_period(
        self, by: UsagePeriodName = "day", since: datetime | None = None, until: datetime | None = None
    ) -> UsagePeriodsResponse:
        """This key's charged requests, images and cost per UTC hour or day in ``[since, until)``."""
        params: dict[str, str] = {"by": by}
        params.update({name: t.isoformat() for name, t in (("since", since), ("until", until)) if t})
        return _parse_json(self._send("GET", Routes.USAGE_PERIODS, params=params), UsagePeriodsResponse)

    def _charged(
        self, endpoint: Endpoint, path: str, body: bytes, content_type: str, images: int
    ) -> httpx.Response:
        headers = {"Content-Type": content_type, REQUEST_ID_HEADER: uuid.uuid4().hex}
        response = self._send("POST", path, content=body, headers=headers)
        self.meter.add(endpoint, images=images, nbytes=len(body))
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One logical call: retried on connection errors, 503, a gateway's 502/504, 409 (its request id
        still being answered, e.g. after a timeout) and 429 rate_limited (after its Retry-After); raised
        on any other error. A charged call keeps one request id across its retries, so the server (any
        replica behind a load balancer) replays an answer it already charged."""
        delays = self.retry.delays()
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure: Exception = TransportError(f"{method} {path}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code < 400:
                    return response
                failure = _error_from(response)
                if not isinstance(failure, _RETRIED):
                    raise failure
            delay = next(delays, None)
            if delay is None:
                raise failure
            if isinstance(failure, RateLimitedError) and failure.retry_after is not None:
                if failure.retry_after > self.retry.max_retry_after:
                    raise failure
                delay = failure.retry_after  # the server knows when the key's next token is there
            log.warning("%s; retrying in %.2f s", failure, delay)
            time.sleep(delay)


def _build(model: type[RequestModel], **fields: Any) -> RequestModel:
    """A request model; fields the protocol forbids fail here, before anything is sent or charged."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidRequestError(f"invalid {model.__name__}: {problems}") from None


def _error_from(response: httpx.Response) -> APIStatusError:
    retry_after = _seconds(response.headers.get("Retry-After"))
    try:
        error = ErrorBody.model_validate_json(response.content).error
    except ValidationError:
        text = response.text[:200]
        message = f"unexpected error body: {text!r}"
        return error_for_status(response.status_code, "unknown", message, retry_after=retry_after)
    return error_for_status(response.status_code, error.code.value, error.message, error.detail, retry_after)


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds; its HTTP-date form (never sent by this server) counts as absent."""
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _parse_json(response: httpx.Response, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise _not_a(response, model, exc) from exc


def _parse_msgpack(response: httpx.Response, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(unpack(response.content))
    except (CodecError, ValidationError) as exc:
        raise _not_a(response, model, exc) from exc


def _decode(response: httpx.Response, model: type[BaseModel], wire: WireTensor) -> np.ndarray:
    """A tensor from a parsed response; a malformed one is the server's protocol error, not a CodecError."""
    try:
        return wire.to_numpy()
    except CodecError as exc:
        raise _not_a(response, model, exc) from exc


def _not_a(response: httpx.Response, model: type[BaseModel], exc: Exception) -> ProtocolError:
    return ProtocolError(f"{response.request.url.path}: response is not a {model.__name__}: {exc}")


def _precision(precision: RequestPrecision | str | None) -> dict[str, RequestPrecision]:
    return {} if precision is None else {"precision": RequestPrecision(precision)}


def _dump(request: LogitsRequest | LossRequest) -> dict[str, Any]:
    """The request's fields, without ``precision`` when it is the default "serving": servers older
    than protocol 1.5 refuse unknown fields, and the body of a default request stays as it was."""
    if request.precision == RequestPrecision.SERVING:
        return request.model_dump(exclude={"precision"})
    return request.model_dump()
