"""Pydantic models for every request and response, the error body, and the route table.

JSON carries the small control messages (tasks, info, usage, errors); msgpack carries image batches
and their outputs, because a (64, 3, 224, 224) float32 batch is 38.5 MB.
"""

from __future__ import annotations

import string
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.access import Access, AccessLevelPrice
from shared.codec import ACCEPTED_IMAGE_DTYPES, OUTPUT_DTYPE, decode_tensor, encode_tensor

__all__ = [
    "MSGPACK_CONTENT_TYPE",
    "PROTOCOL_VERSION",
    "REQUEST_ID_HEADER",
    "ERROR_STATUS",
    "Endpoint",
    "ConnectionLimits",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "HealthResponse",
    "InfoResponse",
    "KeyQuota",
    "LogitsRequest",
    "LogitsResponse",
    "LossKind",
    "LossRequest",
    "LossResponse",
    "REPLAYED_HEADER",
    "RequestPrecision",
    "Routes",
    "ServingInfo",
    "TaskLimits",
    "TaskRequest",
    "TaskResponse",
    "USAGE_PERIOD_SECONDS",
    "UsageCounts",
    "UsagePeriod",
    "UsagePeriodName",
    "UsagePeriodsResponse",
    "UsageResponse",
    "WireTensor",
    "cost_of",
    "template_problem",
]

# Major.minor: a client refuses a server whose major differs.
PROTOCOL_VERSION = "1.6"
MSGPACK_CONTENT_TYPE = "application/msgpack"
# An idempotency key, scoped to the API key: a retry with the same id and body replays the stored
# answer (no model call, no second charge); the same id with another body is refused.
REQUEST_ID_HEADER = "X-Request-ID"
# Set to "true" on an answer that was replayed from the idempotency store rather than computed.
REPLAYED_HEADER = "Idempotent-Replayed"


class Routes:
    """Paths of the HTTP API (one place for both sides)."""

    HEALTH = "/v1/health"
    INFO = "/v1/info"
    TASKS = "/v1/tasks"
    TASK = "/v1/tasks/{task_id}"
    LOGITS = "/v1/tasks/{task_id}/logits"
    LOSS = "/v1/tasks/{task_id}/loss"
    USAGE = "/v1/usage"
    USAGE_PERIODS = "/v1/usage/periods"


class Endpoint(StrEnum):
    """The charged endpoints, by the name both the ledger and the client meter count them under."""

    TASKS = "tasks"
    LOGITS = "logits"
    LOSS = "loss"


def cost_of(
    images: int, price_per_1k_images: float, texts: int = 0, price_per_1k_texts: float = 0.0
) -> float:
    """What a charge costs: ``images`` image queries and ``texts`` encoded texts (a registration's
    class x template texts, or their recomputation), each at the server's price per 1,000."""
    return images * price_per_1k_images / 1000.0 + texts * price_per_1k_texts / 1000.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorCode(StrEnum):
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MALFORMED_BODY = "malformed_body"
    VALIDATION_ERROR = "validation_error"
    INVALID_TENSOR = "invalid_tensor"
    INVALID_VALUES = "invalid_values"
    INVALID_LABELS = "invalid_labels"
    TOO_MANY_IMAGES = "too_many_images"
    BODY_TOO_LARGE = "body_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    RATE_LIMITED = "rate_limited"
    TASK_LIMIT_REACHED = "task_limit_reached"
    REQUEST_IN_PROGRESS = "request_in_progress"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    REPLAY_EXPIRED = "replay_expired"
    CLIENT_DISCONNECTED = "client_disconnected"
    REQUEST_TIMEOUT = "request_timeout"
    TOO_MANY_UPLOADS = "too_many_uploads"
    SERVER_BUSY = "server_busy"
    NOT_READY = "not_ready"
    QUEUE_FULL = "queue_full"
    LEDGER_UNAVAILABLE = "ledger_unavailable"
    INTERNAL_ERROR = "internal_error"


# The one table of error codes and their HTTP statuses: the server raises by code, clients read both.
ERROR_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ACCESS_DENIED: 403,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.MALFORMED_BODY: 400,
    ErrorCode.CLIENT_DISCONNECTED: 400,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.INVALID_TENSOR: 422,
    ErrorCode.INVALID_VALUES: 422,
    ErrorCode.INVALID_LABELS: 422,
    ErrorCode.IDEMPOTENCY_MISMATCH: 422,
    ErrorCode.TOO_MANY_IMAGES: 413,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TASK_LIMIT_REACHED: 429,
    ErrorCode.REQUEST_IN_PROGRESS: 409,
    ErrorCode.REPLAY_EXPIRED: 410,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TOO_MANY_UPLOADS: 429,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.LEDGER_UNAVAILABLE: 503,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class ErrorDetail(_Model):
    code: ErrorCode
    message: str
    detail: dict[str, Any] | None = None


class ErrorBody(_Model):
    """The one shape of every error response, whatever the status."""

    error: ErrorDetail


class WireTensor(_Model):
    """A tensor as a msgpack map (``shared.codec``): its shape, its dtype's name, its raw buffer."""

    shape: list[int] = Field(description="dimensions, non-negative integers")
    dtype: str = Field(
        description=f"images: one of {', '.join(ACCEPTED_IMAGE_DTYPES)}; answers: {OUTPUT_DTYPE}"
    )
    data: bytes = Field(
        description="msgpack bin: the array's little-endian, C-ordered buffer, prod(shape) x itemsize bytes"
    )

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> WireTensor:
        return cls(**encode_tensor(array))

    def to_numpy(self, allowed_dtypes: tuple[str, ...] | None = None) -> np.ndarray:
        return decode_tensor(self.model_dump(), allowed_dtypes=allowed_dtypes)


class HealthResponse(_Model):
    status: Literal["ok", "loading", "failed", "degraded"]  # degraded: the ledger cannot commit
    protocol_version: str = PROTOCOL_VERSION
    detail: str | None = None


class TaskLimits(_Model):
    """What one task registration may hold; everything is checked before any text is built."""

    max_task_bytes: int
    max_classes: int
    max_templates: int
    max_class_name_chars: int
    max_template_chars: int
    max_texts: int  # classes x templates
    max_tasks_per_key: int
    # the bytes of class names and templates one key's stored tasks may hold in all (older servers: none)
    max_task_store_bytes_per_key: int | None = None


class ConnectionLimits(_Model):
    """How the server bounds what clients hold open: connections, uploads and request bytes in memory."""

    max_connections: int  # beyond it a new connection is answered 503 and closed
    max_uploads_per_key: int  # request bodies one key may be sending at once (more: 429)
    header_timeout_s: float  # a request's headers must arrive within it (else 408, closed)
    body_timeout_s: float  # a request's body must arrive within it (else 408, closed)
    memory_budget_mb: float  # request bytes held at once, server-wide (over it: 503 before the body)


class InfoResponse(_Model):
    protocol_version: str
    model: str
    pretrained: str  # a tag, "checkpoint:<file name>" or "random-init"
    image_size: int
    channels: int = 3
    mean: tuple[float, float, float]  # the normalisation the server applies to [0, 1] pixels
    std: tuple[float, float, float]
    accepted_dtypes: list[str]
    output_dtype: str
    losses: list[str]
    max_batch_images: int
    max_request_bytes: int
    price_per_1k_images: float
    quota_images: int | None
    auth_required: bool
    price_per_1k_texts: float = 0.0  # text encoding (registrations, recomputes); older servers: free
    task_limits: TaskLimits
    idempotency_window_s: float  # how long a request id is remembered (and never charged twice)
    replay_ttl_s: float  # how long the answer itself is kept for a replay
    serving: ServingInfo | None = None  # absent from servers older than protocol 1.2
    connections: ConnectionLimits | None = None  # absent from servers older than protocol 1.4
    # the access levels this server offers and their prices (shared.access); older than 1.6: logits only
    access_levels: list[AccessLevelPrice] | None = None


class ServingInfo(_Model):
    """How the server runs forwards: its batcher and its numeric path."""

    device: str
    precision: str  # fp32, or the CUDA autocast dtype (fp16, bf16); logits are float32 either way
    channels_last: bool
    warmup_s: float  # the warm-up forward at load
    batcher: bool  # requests share forwards; off: one forward per request piece
    max_forward_batch: int
    max_queue_delay_ms: float
    max_queue_images: int
    batch_padding: str  # fixed: forwards padded to forward_shapes, so results never depend on batching
    forward_shapes: list[int] | None  # the sizes forwards are padded to; None without padding
    # What a logits/loss request's ``precision`` may ask (RequestPrecision); absent from servers older
    # than protocol 1.5, which take no such field. On CPU ``precision`` is fp32 and both are fp32.
    request_precisions: list[str] | None = None


class TaskRequest(_Model):
    """Counts, lengths and the template grammar are checked by the server against its ``TaskLimits``
    (before any text is formatted or tokenised); ``template_problem`` is the grammar."""

    class_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    templates: Annotated[list[str], Field(min_length=1)] = ["a photo of a {}."]
    access: Access = Field(default_factory=Access, description="what the task's answers reveal (1.6+)")


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a valid class-name template, or None.

    A template holds exactly one bare ``{}`` field: no name, index, conversion or format spec
    (``str.format`` would look those up or pad by them); ``{{`` and ``}}`` stand for literal braces.
    """
    try:
        fields = [parsed[1:] for parsed in string.Formatter().parse(template) if parsed[1] is not None]
    except ValueError as exc:  # a lone brace
        return f"unbalanced braces ({exc}); write {{{{ or }}}} for a literal brace"
    if len(fields) != 1:
        return f"must contain exactly one '{{}}' field; found {len(fields)}"
    name, spec, conversion = fields[0]
    if name or spec or conversion:
        return "the field must be a bare '{}': no name, index, conversion or format spec"
    return None


class TaskResponse(_Model):
    task_id: str
    num_classes: int
    class_names: list[str]
    templates: list[str]
    access: Access = Field(default_factory=Access)  # older than 1.6: every task is at level logits


class LossKind(StrEnum):
    CROSS_ENTROPY = "ce"
    FOCAL = "focal"


_IMAGES = "(N, 3, S, S) at the image_size S of /v1/info, in [0, 1] (uint8: value/255)"


class RequestPrecision(StrEnum):
    """The numeric path of one request's forwards. The seed trains under CUDA autocast (fp16) and
    tests in fp32: a server started with ``--precision fp16`` serves training at fp16, and evaluation
    asks ``fp32``. Requests of different precisions never share a forward."""

    SERVING = "serving"  # the server's --precision (ServingInfo.precision)
    FP32 = "fp32"  # float32 forwards whatever the server's --precision


_PRECISION = Field(
    RequestPrecision.SERVING,
    description="serving: the server's --precision; fp32: float32 forwards (evaluation). Protocol 1.5+",
)


class LogitsRequest(_Model):
    images: WireTensor = Field(description=_IMAGES)
    precision: RequestPrecision = _PRECISION


class LogitsResponse(_Model):
    """The fields the task's access level reveals (``shared.access``); the others are absent."""

    logits: WireTensor | None = Field(
        None, description="level logits: (N, C) float32, exp(logit_scale) * cosine(image, class)"
    )
    probabilities: WireTensor | None = Field(
        None, description="level probabilities: (N, C) float32 softmax; top-k: (N, k), most probable first"
    )
    classes: list[list[int]] | None = Field(None, description="level top-k: (N, k) class indices")
    labels: list[int] | None = Field(None, description="level label: (N,) the predicted class")


class LossRequest(_Model):
    images: WireTensor = Field(description=_IMAGES)
    labels: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(
        description="(N,) class indices, each below the task's number of classes"
    )
    loss: LossKind = LossKind.CROSS_ENTROPY
    focal_gamma: Annotated[float, Field(ge=0.0, le=10.0, description="gamma of loss=focal")] = 2.0
    precision: RequestPrecision = _PRECISION


class LossResponse(_Model):
    losses: WireTensor = Field(description="(N,) float32, the loss of each image")
    correct: list[bool] = Field(description="(N,) whether the argmax of an image's logits is its label")


class UsageCounts(_Model):
    requests: int = 0
    images: int = 0
    batch_passes: int = 0
    bytes: int = 0
    texts: int = 0
    cost: float = 0.0


class KeyQuota(_Model):
    """A key's limits and what is left of them; None: no limit."""

    images: int | None = None
    cost: float | None = None
    images_left: int | None = None
    cost_left: float | None = None
    rate_per_s: float | None = None  # requests per second (token bucket)
    levels: list[str] | None = None  # the access levels this key may register tasks at; None: all offered


class UsageResponse(_Model):
    key_id: str
    total: UsageCounts
    by_endpoint: dict[str, UsageCounts]
    rejected_requests: int
    rejected_by_status: dict[str, int]
    price_per_1k_images: float
    quota: KeyQuota | None = None  # absent from servers older than protocol 1.3
    price_per_1k_texts: float = 0.0  # absent (free) from servers older than protocol 1.4


# Periods are aligned to UTC: an hour starts at :00, a day at 00:00 UTC.
UsagePeriodName = Literal["hour", "day"]
USAGE_PERIOD_SECONDS: dict[str, int] = {"hour": 3600, "day": 86_400}


class UsagePeriod(_Model):
    start: datetime  # UTC
    requests: int
    images: int
    cost: float


class UsagePeriodsResponse(_Model):
    """A key's charged calls per period, oldest first; periods without a charged call are left out."""

    key_id: str
    by: UsagePeriodName
    since: datetime | None
    until: datetime | None
    periods: list[UsagePeriod]
