"""Exceptions raised by the SDK.

BlackVIPError
├── TransportError              no answer from the server, after retries
├── ProtocolError               an answer the protocol does not allow (or a version mismatch)
├── InvalidRequestError (ValueError)  a request the protocol forbids, refused before it is sent
├── JobInterruptedError         a training job gave up on an absent server, leaving a checkpoint
├── DatasetError (ValueError)   a dataset folder without the expected layout
├── EncoderLoadError            the Coordinator's pretrained encoder cannot be loaded
└── APIStatusError              the server answered with its error body (.status, .code, .detail)
    ├── BadRequestError              400
    ├── AuthenticationError          401
    ├── AccessDeniedError            403 (the task's access level does not answer this route, or the
    │                                key may not register a task at that level)
    ├── NotFoundError                404
    ├── RequestTimeoutError          408, after retries (the body was sent slower than the server waits)
    ├── RequestInProgressError       409, after retries (the same request id is still being answered)
    ├── ReplayExpiredError           410 (answered and charged once; its stored answer is gone)
    ├── PayloadTooLargeError         413
    ├── UnsupportedMediaTypeError    415
    ├── InvalidInputError            422
    ├── QuotaExceededError           429 quota_exceeded (never retried), task_limit_reached
    ├── RateLimitedError             429 rate_limited, too_many_uploads, after waiting out Retry-After within
    │                                the retries
    ├── ServerUnavailableError       503, after retries
    └── ServerError                  any other 5xx
        └── GatewayError             502, 504 from a proxy or load balancer, after retries

An error answer is classed by its code where the code is one of ours with that status (two codes share
429), else by its status alone, so an answer without our error body (a proxy's 502) still gets a class.
``retry_after`` holds the answer's ``Retry-After`` in seconds, when it had one.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import ERROR_STATUS, ErrorCode

__all__ = [
    "TrainingDivergedError",
    "AccessDeniedError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "BlackVIPError",
    "DatasetError",
    "EncoderLoadError",
    "GatewayError",
    "InvalidInputError",
    "InvalidRequestError",
    "JobInterruptedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitedError",
    "ReplayExpiredError",
    "RequestInProgressError",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "TransportError",
    "UnsupportedMediaTypeError",
    "error_for_status",
]


class BlackVIPError(Exception):
    """Base of everything the SDK raises."""


class TransportError(BlackVIPError):
    """The server could not be reached (connection refused, reset, timed out) after retries."""


class ProtocolError(BlackVIPError):
    """The server's answer does not follow the wire protocol."""


class InvalidRequestError(BlackVIPError, ValueError):
    """A request that breaks the wire protocol (e.g. a negative label), caught before it is sent."""


class JobInterruptedError(BlackVIPError):
    """The server stayed away longer than the job waits; a checkpoint to resume from was written."""


class TrainingDivergedError(BlackVIPError, FloatingPointError):
    """The loss or the parameters became NaN/Inf; the last good checkpoint was kept."""


class DatasetError(BlackVIPError, ValueError):
    """A dataset folder that does not have the expected layout; the message names the path."""


class EncoderLoadError(BlackVIPError, RuntimeError):
    """A pretrained encoder cannot be loaded; the message says how to provide it."""


class APIStatusError(BlackVIPError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class AccessDeniedError(APIStatusError):
    """403: the task's access level does not reveal what was asked (``shared.access``), or the key
    may not use the level; never retried."""


class NotFoundError(APIStatusError):
    pass


class RequestInProgressError(APIStatusError):
    pass


class ReplayExpiredError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnsupportedMediaTypeError(APIStatusError):
    pass


class InvalidInputError(APIStatusError):
    pass


class QuotaExceededError(APIStatusError):
    pass


class RateLimitedError(APIStatusError):
    pass


class RequestTimeoutError(APIStatusError):
    """408: the request's headers or body did not arrive within the server's deadline (a slow link, a
    stalled sender); nothing was charged, and the call is retried under its request id."""


class ServerUnavailableError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


class GatewayError(ServerError):
    """A proxy's 502 or 504: the server behind it went away (a replica killed mid-request) or did not
    answer in time. Retried like a lost connection: the call keeps its request id, so another replica
    replays it if it was charged."""


_GATEWAY_STATUSES = (502, 504)


# Each class by one error code it stands for; the status comes from the one table of the protocol.
# The first code listed for a status gives the class of an answer with that status and no code of ours.
_CLASS_FOR_CODE: dict[ErrorCode, type[APIStatusError]] = {
    ErrorCode.MALFORMED_BODY: BadRequestError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.ACCESS_DENIED: AccessDeniedError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.REQUEST_IN_PROGRESS: RequestInProgressError,
    ErrorCode.REPLAY_EXPIRED: ReplayExpiredError,
    ErrorCode.REQUEST_TIMEOUT: RequestTimeoutError,
    ErrorCode.BODY_TOO_LARGE: PayloadTooLargeError,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: UnsupportedMediaTypeError,
    ErrorCode.VALIDATION_ERROR: InvalidInputError,
    ErrorCode.QUOTA_EXCEEDED: QuotaExceededError,
    ErrorCode.NOT_READY: ServerUnavailableError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
    ErrorCode.TOO_MANY_UPLOADS: RateLimitedError,
}
_BY_STATUS = {ERROR_STATUS[code]: cls for code, cls in reversed(_CLASS_FOR_CODE.items())}  # first wins
_BY_CODE = {code.value: cls for code, cls in _CLASS_FOR_CODE.items()}


def error_for_status(
    status: int,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    cls = _BY_CODE.get(code)
    if cls is None or ERROR_STATUS[ErrorCode(code)] != status:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIStatusError)
        if status in _GATEWAY_STATUSES:
            cls = GatewayError
    return cls(status, code, message, detail, retry_after)
