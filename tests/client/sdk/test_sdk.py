"""The SDK's retry, error and metering logic against an in-process ``httpx.MockTransport``.

Network faults are the only thing faked here: every response body is built from the real protocol
models and codec, so a test fails if the SDK and the wire protocol drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

import client
from client import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BlackVIPClient,
    BlackVIPError,
    EndpointCount,
    GatewayError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    QueryMeter,
    QuotaExceededError,
    RateLimitedError,
    ReplayExpiredError,
    RequestInProgressError,
    RetryPolicy,
    ServerError,
    ServerUnavailableError,
    UnsupportedMediaTypeError,
)
from shared.codec import decode_tensor, pack, unpack
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    PROTOCOL_VERSION,
    REQUEST_ID_HEADER,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    InfoResponse,
    LogitsResponse,
    LossResponse,
    Routes,
    TaskLimits,
    TaskResponse,
    UsageCounts,
    UsageResponse,
    WireTensor,
)

BASE_URL = "http://blackvip.test"
API_KEY = "key-unit"
TASK_ID = "task-1"
NUM_CLASSES = 5
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)

Reply = Callable[[httpx.Request], httpx.Response]


# ---------------------------------------------------------------------------------------------
# Replies built from the real protocol models
# ---------------------------------------------------------------------------------------------


def json_reply(model: Any, status: int = 200) -> Reply:
    return lambda request: httpx.Response(
        status, content=model.model_dump_json().encode(), headers={"Content-Type": "application/json"}
    )


def msgpack_reply(obj: Any, status: int = 200) -> Reply:
    content = pack(obj.model_dump() if hasattr(obj, "model_dump") else obj)
    return lambda request: httpx.Response(
        status, content=content, headers={"Content-Type": MSGPACK_CONTENT_TYPE}
    )


def error_reply(status: int, code: ErrorCode, message: str, detail: dict | None = None) -> Reply:
    return json_reply(ErrorBody(error=ErrorDetail(code=code, message=message, detail=detail)), status)


def raw_reply(status: int, content: bytes, content_type: str = "text/plain") -> Reply:
    return lambda request: httpx.Response(status, content=content, headers={"Content-Type": content_type})


def fault(exc_type: type[httpx.TransportError]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"{exc_type.__name__} (simulated)", request=request)

    return reply


def unavailable() -> Reply:
    return error_reply(503, ErrorCode.NOT_READY, "model is loading")


def logits_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, NUM_CLASSES)).astype(np.float32)


def logits_reply(logits: np.ndarray) -> Reply:
    return msgpack_reply(LogitsResponse(logits=WireTensor.from_numpy(logits)))


def images_for(n: int, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    return rng.random((n, 3, 8, 8)).astype(dtype)


TASK_LIMITS = TaskLimits(
    max_task_bytes=2**20,
    max_classes=1000,
    max_templates=100,
    max_class_name_chars=200,
    max_template_chars=300,
    max_texts=100_000,
    max_tasks_per_key=1000,
)


def info_model(protocol_version: str = PROTOCOL_VERSION) -> InfoResponse:
    return InfoResponse(
        protocol_version=protocol_version,
        model="tiny-vit",
        pretrained="random-init",
        image_size=8,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        accepted_dtypes=["float32", "float16", "uint8"],
        output_dtype="float32",
        losses=["ce", "focal"],
        max_batch_images=64,
        max_request_bytes=10_000_000,
        price_per_1k_images=1.5,
        quota_images=None,
        auth_required=True,
        task_limits=TASK_LIMITS,
        idempotency_window_s=86400.0,
        replay_ttl_s=900.0,
    )


def task_model(class_names: list[str] | None = None) -> TaskResponse:
    names = class_names or [f"class{i}" for i in range(NUM_CLASSES)]
    return TaskResponse(
        task_id=TASK_ID, num_classes=len(names), class_names=names, templates=["a photo of a {}."]
    )


def usage_model() -> UsageResponse:
    return UsageResponse(
        key_id="abc",
        total=UsageCounts(),
        by_endpoint={},
        rejected_requests=0,
        rejected_by_status={},
        price_per_1k_images=1.5,
    )


class FakeServer:
    """Answers with the given replies in order (the last one repeats) and records every request."""

    def __init__(self, *replies: Reply) -> None:
        assert replies
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        index = min(len(self.requests), len(self.replies) - 1)
        self.requests.append(request)
        return self.replies[index](request)

    @property
    def request_ids(self) -> list[str | None]:
        return [request.headers.get(REQUEST_ID_HEADER) for request in self.requests]


class Router:
    """Answers by method and path; records every request."""

    def __init__(self, routes: dict[tuple[str, str], Reply]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.routes.get((request.method, request.url.path))
        if reply is None:
            return error_reply(404, ErrorCode.NOT_FOUND, f"no route {request.url.path}")(request)
        return reply(request)


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    retry: RetryPolicy = NO_WAIT,
    meter: QueryMeter | None = None,
) -> BlackVIPClient:
    return BlackVIPClient(BASE_URL, API_KEY, retry=retry, meter=meter, transport=httpx.MockTransport(handler))


# The SDK's calls, each as (name, call): used to check that every kind of call maps errors alike.
CALLS: dict[str, Callable[[BlackVIPClient], Any]] = {
    "logits": lambda sdk: sdk.logits(TASK_ID, images_for(2)),
    "loss": lambda sdk: sdk.loss(TASK_ID, images_for(2), [0, 1]),
    "register_task": lambda sdk: sdk.register_task(["cat", "dog"]),
    "get_task": lambda sdk: sdk.get_task(TASK_ID),
    "info": lambda sdk: sdk.info(),
    "usage": lambda sdk: sdk.usage(),
}

ERROR_STATUSES = [
    (400, ErrorCode.MALFORMED_BODY, BadRequestError),
    (401, ErrorCode.UNAUTHORIZED, AuthenticationError),
    (404, ErrorCode.NOT_FOUND, NotFoundError),
    (410, ErrorCode.REPLAY_EXPIRED, ReplayExpiredError),
    (413, ErrorCode.TOO_MANY_IMAGES, PayloadTooLargeError),
    (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, UnsupportedMediaTypeError),
    (422, ErrorCode.INVALID_TENSOR, InvalidInputError),
    (429, ErrorCode.QUOTA_EXCEEDED, QuotaExceededError),
    (500, ErrorCode.INTERNAL_ERROR, ServerError),
]


# ---------------------------------------------------------------------------------------------
# Happy paths: what the SDK sends and what it returns
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_logits_sends_the_batch_and_returns_the_servers_logits(dtype: str) -> None:
    expected = logits_for(3, seed=7)
    server = FakeServer(logits_reply(expected))
    images = images_for(3, dtype)
    with make_client(server) as sdk:
        logits = sdk.logits(TASK_ID, images)
    assert logits.dtype == np.float32
    assert np.array_equal(logits, expected)
    (request,) = server.requests
    assert request.method == "POST"
    assert request.url.path == Routes.LOGITS.format(task_id=TASK_ID)
    assert request.headers["Content-Type"] == MSGPACK_CONTENT_TYPE
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    sent = decode_tensor(unpack(request.content)["images"])
    assert sent.dtype == images.dtype and np.array_equal(sent, images)


def test_loss_sends_labels_and_returns_losses_and_correct() -> None:
    losses = np.array([0.25, 1.5, 3.0], dtype=np.float32)
    server = FakeServer(
        msgpack_reply(LossResponse(losses=WireTensor.from_numpy(losses), correct=[True, False, True]))
    )
    with make_client(server) as sdk:
        result = sdk.loss(TASK_ID, images_for(3), np.array([[4], [0], [2]]), loss="focal", focal_gamma=1)
    assert np.array_equal(result.losses, losses)
    assert result.correct.dtype == bool and result.correct.tolist() == [True, False, True]
    body = unpack(server.requests[0].content)
    assert body["labels"] == [4, 0, 2]
    assert body["loss"] == "focal" and body["focal_gamma"] == 1.0
    assert server.requests[0].url.path == Routes.LOSS.format(task_id=TASK_ID)


def test_client_without_api_key_sends_no_authorization() -> None:
    server = FakeServer(json_reply(info_model()))
    with BlackVIPClient(BASE_URL, retry=NO_WAIT, transport=httpx.MockTransport(server)) as sdk:
        sdk.info()
    assert "Authorization" not in server.requests[0].headers


# ---------------------------------------------------------------------------------------------
# Error statuses: the right exception, never retried
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(
    ("status", "code", "exc_type"), ERROR_STATUSES, ids=[str(s[0]) for s in ERROR_STATUSES]
)
def test_error_status_maps_to_its_exception_and_is_not_retried(
    call: str, status: int, code: ErrorCode, exc_type: type[APIStatusError]
) -> None:
    detail = {"received": [2, 3], "hint": "see docs"}
    server = FakeServer(
        error_reply(status, code, f"what went wrong ({status})", detail), logits_reply(logits_for(2))
    )
    with make_client(server) as sdk, pytest.raises(APIStatusError) as info:
        CALLS[call](sdk)
    exc = info.value
    assert type(exc) is exc_type
    assert isinstance(exc, BlackVIPError)
    assert exc.status == status
    assert exc.code == code.value
    assert exc.message == f"what went wrong ({status})"
    assert exc.detail == detail
    assert str(status) in str(exc) and code.value in str(exc)
    assert len(server.requests) == 1  # never retried, although the next attempt would succeed
    assert sdk.meter.requests == 0 and sdk.meter.by_endpoint == {}


def test_other_statuses_map_to_the_generic_classes_and_are_not_retried() -> None:
    server = FakeServer(error_reply(418, ErrorCode.INTERNAL_ERROR, "odd"))
    with make_client(server) as sdk, pytest.raises(APIStatusError) as info:
        sdk.logits(TASK_ID, images_for(1))
    assert type(info.value) is APIStatusError
    assert info.value.status == 418
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateways_502_or_504_is_retried_under_the_same_request_id(status: int) -> None:
    # A load balancer's answer when the replica behind it died mid-request: the retry, with the same
    # id, lands on another replica, which replays the answer if the first one had charged it.
    expected = logits_for(2, seed=5)
    server = FakeServer(raw_reply(status, b"<html>Bad Gateway</html>", "text/html"), logits_reply(expected))
    with make_client(server) as sdk:
        assert np.array_equal(sdk.logits(TASK_ID, images_for(2)), expected)
    ids = {request.headers[REQUEST_ID_HEADER] for request in server.requests}
    assert len(server.requests) == 2 and len(ids) == 1
    assert sdk.meter.requests == 1


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_forever_raises_after_max_attempts(status: int) -> None:
    server = FakeServer(error_reply(status, ErrorCode.INTERNAL_ERROR, "odd"))
    with make_client(server) as sdk, pytest.raises(GatewayError) as info:
        sdk.logits(TASK_ID, images_for(1))
    assert isinstance(info.value, ServerError) and not isinstance(info.value, ServerUnavailableError)
    assert info.value.status == status
    assert len(server.requests) == NO_WAIT.max_attempts


@pytest.mark.parametrize(
    ("status", "body", "exc_type", "snippet"),
    [
        (500, b"Internal Server Error", ServerError, "Internal Server Error"),
        (501, b"<html><body>Not Implemented</body></html>", ServerError, "Not Implemented"),
        (422, b"\x81\xa5error\xa3bad", InvalidInputError, "error"),  # msgpack, not JSON
        (401, b"", AuthenticationError, "''"),
        (429, b'{"detail": "slow down"}', QuotaExceededError, "slow down"),  # JSON, not an ErrorBody
        (404, b'{"error": {"code": "no_such_code", "message": "x"}}', NotFoundError, "no_such_code"),
        (400, b'{"error": {"code": "malformed_body"}}', BadRequestError, "malformed_body"),  # no message
    ],
    ids=[
        "text-500",
        "html-501",
        "msgpack-422",
        "empty-401",
        "json-429",
        "unknown-code-404",
        "no-message-400",
    ],
)
def test_unexpected_error_body_gives_code_unknown(
    status: int, body: bytes, exc_type: type[APIStatusError], snippet: str
) -> None:
    server = FakeServer(raw_reply(status, body))
    with make_client(server) as sdk, pytest.raises(APIStatusError) as info:
        sdk.logits(TASK_ID, images_for(1))
    exc = info.value
    assert type(exc) is exc_type
    assert exc.status == status
    assert exc.code == "unknown"
    assert "unexpected error body" in exc.message
    assert snippet in exc.message
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------
# Retries: 503 and transport failures, up to max_attempts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [1, 2])
def test_503_is_retried_until_success(failures: int) -> None:
    expected = logits_for(2, seed=3)
    server = FakeServer(*[unavailable()] * failures, logits_reply(expected))
    with make_client(server) as sdk:
        logits = sdk.logits(TASK_ID, images_for(2))
    assert np.array_equal(logits, expected)
    assert len(server.requests) == failures + 1
    assert sdk.meter.requests == 1  # one logical call, however many attempts


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_503_forever_raises_server_unavailable_after_max_attempts(max_attempts: int) -> None:
    server = FakeServer(unavailable())
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=0.0, max_delay=0.0)
    with make_client(server, retry=policy) as sdk, pytest.raises(ServerUnavailableError) as info:
        sdk.logits(TASK_ID, images_for(2))
    assert info.value.status == 503
    assert info.value.code == ErrorCode.NOT_READY.value
    assert info.value.message == "model is loading"
    assert len(server.requests) == max_attempts
    assert sdk.meter.requests == 0


def test_503_with_a_non_json_body_is_still_retried() -> None:
    server = FakeServer(raw_reply(503, b"Service Unavailable"))
    with make_client(server) as sdk, pytest.raises(ServerUnavailableError) as info:
        sdk.get_task(TASK_ID)
    assert info.value.code == "unknown"
    assert len(server.requests) == NO_WAIT.max_attempts


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
@pytest.mark.parametrize("call", ["logits", "register_task", "info"])
def test_transport_failure_is_retried_then_raises_transport_error(
    exc_type: type[httpx.TransportError], call: str
) -> None:
    server = FakeServer(fault(exc_type))
    with make_client(server) as sdk, pytest.raises(client.TransportError) as info:
        CALLS[call](sdk)
    assert isinstance(info.value, BlackVIPError)
    assert not isinstance(info.value, httpx.TransportError)  # the SDK's own class, not httpx's
    assert exc_type.__name__ in str(info.value)
    assert len(server.requests) == NO_WAIT.max_attempts
    assert sdk.meter.requests == 0


def test_transport_failure_then_success() -> None:
    expected = logits_for(4, seed=9)
    server = FakeServer(fault(httpx.ConnectError), unavailable(), logits_reply(expected))
    with make_client(server) as sdk:
        assert np.array_equal(sdk.logits(TASK_ID, images_for(4)), expected)
    assert len(server.requests) == 3
    assert sdk.meter.to_dict() == {
        "logits": {"requests": 1, "images": 4, "bytes": len(server.requests[0].content)}
    }


def test_the_last_failure_is_raised_when_attempts_run_out() -> None:
    server = FakeServer(unavailable(), unavailable(), fault(httpx.ConnectError))
    with make_client(server) as sdk, pytest.raises(client.TransportError):
        sdk.logits(TASK_ID, images_for(1))
    server = FakeServer(fault(httpx.ConnectError), fault(httpx.ConnectError), unavailable())
    with make_client(server) as sdk, pytest.raises(ServerUnavailableError):
        sdk.logits(TASK_ID, images_for(1))


def test_an_error_status_after_a_retry_stops_the_retries() -> None:
    server = FakeServer(unavailable(), error_reply(422, ErrorCode.INVALID_VALUES, "NaN"), unavailable())
    with make_client(server) as sdk, pytest.raises(InvalidInputError):
        sdk.logits(TASK_ID, images_for(1))
    assert len(server.requests) == 2


def test_health_is_not_retried() -> None:
    server = FakeServer(fault(httpx.ConnectError))
    with make_client(server) as sdk, pytest.raises(client.TransportError, match="no answer"):
        sdk.health()
    assert len(server.requests) == 1


def test_retry_policy_yields_max_attempts_minus_one_bounded_delays() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=2.0, jitter=0.1)
    delays = list(policy.delays())
    assert len(delays) == 5
    for attempt, delay in enumerate(delays):
        floor = min(2.0, 0.5 * 2**attempt)
        assert floor <= delay <= floor * 1.1
    assert list(RetryPolicy.none().delays()) == []
    assert list(NO_WAIT.delays()) == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Request ids: one per logical charged call, the same on every attempt
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["logits", "loss", "register_task"])
def test_retried_charged_call_keeps_its_request_id(call: str) -> None:
    success = {
        "logits": logits_reply(logits_for(2)),
        "loss": msgpack_reply(
            LossResponse(losses=WireTensor.from_numpy(np.zeros(2, np.float32)), correct=[False, True])
        ),
        "register_task": json_reply(task_model(["cat", "dog"])),
    }[call]
    server = FakeServer(unavailable(), fault(httpx.ConnectError), success)
    with make_client(server) as sdk:
        CALLS[call](sdk)
        first = server.request_ids
        assert len(first) == 3
        assert first[0] and len(set(first)) == 1
        assert len({request.content for request in server.requests}) == 1  # the same body, too

        server.requests.clear()
        server.replies = [success]
        CALLS[call](sdk)
        CALLS[call](sdk)
    later = server.request_ids
    assert len(later) == 2 and all(later)
    assert len({first[0], *later}) == 3  # every logical call gets a fresh id


def test_a_request_still_in_progress_is_retried_under_the_same_id() -> None:
    busy = error_reply(409, ErrorCode.REQUEST_IN_PROGRESS, "still being answered")
    server = FakeServer(busy, busy, logits_reply(logits_for(2)))
    with make_client(server) as sdk:
        sdk.logits(TASK_ID, images_for(2))
    assert len(server.request_ids) == 3 and len(set(server.request_ids)) == 1
    assert sdk.meter.requests == 1


def test_in_progress_forever_raises_request_in_progress() -> None:
    server = FakeServer(error_reply(409, ErrorCode.REQUEST_IN_PROGRESS, "still being answered"))
    with make_client(server) as sdk, pytest.raises(RequestInProgressError):
        sdk.logits(TASK_ID, images_for(2))
    assert sdk.meter.requests == 0


# ---------------------------------------------------------------------------------------------
# Rate limits: 429 rate_limited waits the server's Retry-After; 429 quota_exceeded never retries
# ---------------------------------------------------------------------------------------------


def rate_limited(retry_after: str | None) -> Reply:
    body = ErrorBody(error=ErrorDetail(code=ErrorCode.RATE_LIMITED, message="slow down")).model_dump_json()
    extra = {"Retry-After": retry_after} if retry_after is not None else {}
    return lambda request: httpx.Response(
        429, content=body.encode(), headers={"Content-Type": "application/json", **extra}
    )


class TimedServer(FakeServer):
    """A FakeServer that also notes when each request arrived."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__(*replies)
        self.arrivals: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(time.monotonic())
        return super().__call__(request)


def test_a_rate_limited_call_waits_retry_after_then_succeeds_under_the_same_id() -> None:
    server = TimedServer(rate_limited("1"), logits_reply(logits_for(2)))
    slow_backoff = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)  # the backoff would not wait
    with make_client(server, retry=slow_backoff) as sdk:
        sdk.logits(TASK_ID, images_for(2))
    assert len(server.requests) == 2 and len(set(server.request_ids)) == 1
    assert server.arrivals[1] - server.arrivals[0] >= 1.0  # the server's Retry-After, not the backoff's 0
    assert sdk.meter.requests == 1


def test_rate_limited_forever_raises_after_max_attempts_with_the_retry_after() -> None:
    server = FakeServer(rate_limited("0"))
    with make_client(server) as sdk, pytest.raises(RateLimitedError) as info:
        sdk.logits(TASK_ID, images_for(1))
    assert len(server.requests) == NO_WAIT.max_attempts
    assert info.value.retry_after == 0.0 and info.value.status == 429 and info.value.code == "rate_limited"
    assert sdk.meter.requests == 0


def test_a_retry_after_beyond_the_policys_limit_is_raised_at_once() -> None:
    server = FakeServer(rate_limited("3600"), logits_reply(logits_for(1)))
    with make_client(server, retry=RetryPolicy(max_retry_after=30.0)) as sdk, pytest.raises(RateLimitedError):
        sdk.logits(TASK_ID, images_for(1))
    assert len(server.requests) == 1


def test_a_rate_limit_without_retry_after_uses_the_backoff() -> None:
    server = FakeServer(rate_limited(None), rate_limited("soon"), logits_reply(logits_for(1)))
    with make_client(server) as sdk:
        sdk.logits(TASK_ID, images_for(1))
    assert len(server.requests) == 3


def test_quota_exceeded_is_never_retried_even_with_a_retry_after() -> None:
    body = ErrorBody(error=ErrorDetail(code=ErrorCode.QUOTA_EXCEEDED, message="spent")).model_dump_json()
    spent: Reply = lambda request: httpx.Response(  # noqa: E731
        429, content=body.encode(), headers={"Content-Type": "application/json", "Retry-After": "0"}
    )
    server = FakeServer(spent, logits_reply(logits_for(1)))
    with make_client(server) as sdk, pytest.raises(QuotaExceededError):
        sdk.logits(TASK_ID, images_for(1))
    assert len(server.requests) == 1


def test_request_ids_differ_across_many_calls() -> None:
    server = FakeServer(logits_reply(logits_for(1)))
    with make_client(server) as sdk:
        for _ in range(20):
            sdk.logits(TASK_ID, images_for(1))
    assert len(set(server.request_ids)) == 20


# ---------------------------------------------------------------------------------------------
# The meter: successful charged calls only
# ---------------------------------------------------------------------------------------------


def _service() -> Router:
    losses = LossResponse(losses=WireTensor.from_numpy(np.ones(3, np.float32)), correct=[True] * 3)
    return Router(
        {
            ("GET", Routes.INFO): json_reply(info_model()),
            ("GET", Routes.USAGE): json_reply(usage_model()),
            ("GET", Routes.TASK.format(task_id=TASK_ID)): json_reply(task_model()),
            ("POST", Routes.TASKS): json_reply(task_model()),
            ("POST", Routes.LOGITS.format(task_id=TASK_ID)): logits_reply(logits_for(4)),
            ("POST", Routes.LOSS.format(task_id=TASK_ID)): msgpack_reply(losses),
            ("POST", Routes.LOGITS.format(task_id="bad")): error_reply(
                422, ErrorCode.INVALID_TENSOR, "shape"
            ),
            ("POST", Routes.LOSS.format(task_id="bad")): error_reply(
                422, ErrorCode.INVALID_LABELS, "bad labels"
            ),
            ("POST", Routes.LOGITS.format(task_id="busy")): unavailable(),
        }
    )


def _body_len(router: Router, method: str, path: str) -> int:
    (request,) = [r for r in router.requests if (r.method, r.url.path) == (method, path)]
    return len(request.content)


def test_meter_counts_successful_charged_calls() -> None:
    router = _service()
    with make_client(router) as sdk:
        sdk.info()
        sdk.register_task([f"class{i}" for i in range(NUM_CLASSES)])
        sdk.get_task(TASK_ID)
        sdk.logits(TASK_ID, images_for(4, "uint8"))
        sdk.loss(TASK_ID, images_for(3, "float16"), [0, 1, 2])
        sdk.usage()
    tasks = _body_len(router, "POST", Routes.TASKS)
    logits = _body_len(router, "POST", Routes.LOGITS.format(task_id=TASK_ID))
    loss = _body_len(router, "POST", Routes.LOSS.format(task_id=TASK_ID))
    assert logits > 4 * 3 * 8 * 8  # the body holds the whole uint8 batch
    assert loss > 3 * 3 * 8 * 8 * 2
    meter = sdk.meter
    assert meter.by_endpoint == {
        "tasks": EndpointCount(requests=1, images=0, bytes=tasks),
        "logits": EndpointCount(requests=1, images=4, bytes=logits),
        "loss": EndpointCount(requests=1, images=3, bytes=loss),
    }
    assert (meter.requests, meter.images, meter.bytes) == (3, 7, tasks + logits + loss)


def test_meter_accumulates_per_endpoint() -> None:
    router = _service()
    with make_client(router) as sdk:
        for n in (1, 2, 5):
            sdk.logits(TASK_ID, images_for(n))
    sizes = [len(r.content) for r in router.requests]
    assert sdk.meter.to_dict() == {"logits": {"requests": 3, "images": 8, "bytes": sum(sizes)}}


def test_failed_calls_add_nothing_to_the_meter() -> None:
    router = _service()
    meter = QueryMeter()
    with make_client(router, meter=meter) as sdk:
        sdk.logits(TASK_ID, images_for(2))
        before = meter.to_dict()
        with pytest.raises(InvalidInputError):
            sdk.logits("bad", images_for(2))
        with pytest.raises(InvalidInputError):
            sdk.loss("bad", images_for(2), [0, 9])
        with pytest.raises(ServerUnavailableError):
            sdk.logits("busy", images_for(2))
        with pytest.raises(NotFoundError):
            sdk.logits("missing", images_for(2))
    assert sdk.meter is meter
    assert meter.to_dict() == before
    assert before["logits"]["requests"] == 1 and before["logits"]["images"] == 2
    assert (meter.requests, meter.images) == (1, 2)


def test_transport_failure_adds_nothing_to_the_meter() -> None:
    meter = QueryMeter()
    with make_client(FakeServer(fault(httpx.ConnectError)), meter=meter) as sdk:
        with pytest.raises(client.TransportError):
            sdk.register_task(["cat"])
    assert meter.by_endpoint == {} and meter.bytes == 0


def test_meter_round_trips_through_a_dict() -> None:
    router = _service()
    with make_client(router) as sdk:
        sdk.logits(TASK_ID, images_for(4))
        sdk.register_task(["a", "b"])
    restored = QueryMeter.from_dict(sdk.meter.to_dict())
    assert restored == sdk.meter
    assert restored.requests == 2 and restored.images == 4


# ---------------------------------------------------------------------------------------------
# Protocol errors: answers the protocol does not allow
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "reply", "model"),
    [
        ("info", raw_reply(200, b"<html>hello</html>", "text/html"), "InfoResponse"),
        ("info", json_reply(task_model()), "InfoResponse"),
        ("get_task", json_reply(info_model()), "TaskResponse"),
        ("register_task", msgpack_reply(task_model()), "TaskResponse"),
        ("usage", raw_reply(200, b"{}", "application/json"), "UsageResponse"),
        (
            "logits",
            raw_reply(
                200, b'{"logits": {"shape": [1], "dtype": "float32", "data": "abcd"}}', "application/json"
            ),
            "LogitsResponse",
        ),
        ("logits", raw_reply(200, b"\xc1\xc1", MSGPACK_CONTENT_TYPE), "LogitsResponse"),
        ("logits", msgpack_reply(task_model()), "LogitsResponse"),
        ("logits", msgpack_reply([1, 2, 3]), "LogitsResponse"),
        (
            "logits",
            msgpack_reply({"logits": WireTensor.from_numpy(logits_for(2)).model_dump(), "x": 1}),
            "LogitsResponse",
        ),
        ("loss", msgpack_reply({"losses": {"shape": [2], "dtype": "float32", "data": b""}}), "LossResponse"),
    ],
    ids=[
        "info-html",
        "info-wrong-model",
        "task-wrong-model",
        "task-msgpack",
        "usage-empty",
        "logits-json",
        "logits-garbage",
        "logits-wrong-model",
        "logits-list",
        "logits-extra-field",
        "loss-missing-field",
    ],
)
def test_response_that_is_not_the_expected_model_raises_protocol_error(
    call: str, reply: Reply, model: str
) -> None:
    server = FakeServer(reply)
    with make_client(server) as sdk, pytest.raises(ProtocolError) as info:
        CALLS[call](sdk)
    assert isinstance(info.value, BlackVIPError)
    assert f"not a {model}" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "tensor",
    [
        {"shape": [2, NUM_CLASSES], "dtype": "float32", "data": b"\x00" * 7},  # wrong byte length
        {"shape": [2, NUM_CLASSES], "dtype": "complex64", "data": b"\x00" * 80},  # unknown dtype
        {"shape": [-2, NUM_CLASSES], "dtype": "float32", "data": b""},  # negative dim
        {"shape": [1] * 9, "dtype": "float32", "data": b"\x00" * 4},  # too many dims
    ],
    ids=["length", "dtype", "negative", "ndim"],
)
@pytest.mark.parametrize("call", ["logits", "loss"])
def test_malformed_tensor_in_a_response_raises_protocol_error(call: str, tensor: dict) -> None:
    # The response matches the pydantic model, but its tensor cannot be decoded.
    if call == "logits":
        reply = msgpack_reply({"logits": tensor})
    else:
        reply = msgpack_reply({"losses": tensor, "correct": [True, False]})
    server = FakeServer(reply)
    with make_client(server) as sdk, pytest.raises(ProtocolError) as info:
        CALLS[call](sdk)
    assert "LogitsResponse" in str(info.value) or "LossResponse" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.0", "2"])
def test_info_with_another_major_version_raises_protocol_error(version: str) -> None:
    server = FakeServer(json_reply(info_model(protocol_version=version)))
    with make_client(server) as sdk, pytest.raises(ProtocolError) as info:
        sdk.info()
    assert version in str(info.value) and PROTOCOL_VERSION in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("version", [PROTOCOL_VERSION, "1.7", "1.0.3", "1"])
def test_info_with_the_same_major_version_is_accepted(version: str) -> None:
    server = FakeServer(json_reply(info_model(protocol_version=version)))
    with make_client(server) as sdk:
        info = sdk.info()
    assert info == info_model(protocol_version=version)
    assert server.requests[0].url.path == Routes.INFO
    assert sdk.meter.requests == 0  # info is not a charged call
