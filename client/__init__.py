"""The client side of blackvip-sim. This package's own modules are the SDK for the black-box CLIP
service (no torch); above it sit ``client.data``, ``client.training`` and ``client.cli``.

Never imports open_clip: the model's parameters are out of reach by construction.
"""

from client._exceptions import (
    AccessDeniedError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BlackVIPError,
    DatasetError,
    EncoderLoadError,
    GatewayError,
    InvalidInputError,
    InvalidRequestError,
    JobInterruptedError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    QuotaExceededError,
    RateLimitedError,
    ReplayExpiredError,
    RequestInProgressError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    TrainingDivergedError,
    TransportError,
    UnsupportedMediaTypeError,
)
from client._meter import EndpointCount, QueryMeter
from client._outputs import Outputs
from client._retry import RetryPolicy
from client._sdk import BlackVIPClient, LossResult

__all__ = [
    "AccessDeniedError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "BlackVIPClient",
    "BlackVIPError",
    "DatasetError",
    "EncoderLoadError",
    "EndpointCount",
    "InvalidInputError",
    "InvalidRequestError",
    "JobInterruptedError",
    "TrainingDivergedError",
    "LossResult",
    "NotFoundError",
    "Outputs",
    "PayloadTooLargeError",
    "ProtocolError",
    "QueryMeter",
    "QuotaExceededError",
    "RateLimitedError",
    "ReplayExpiredError",
    "RequestInProgressError",
    "RequestTimeoutError",
    "RetryPolicy",
    "GatewayError",
    "ServerError",
    "ServerUnavailableError",
    "TransportError",
    "UnsupportedMediaTypeError",
]
