"""Wire protocol shared by the server and the client.

Nothing here imports torch: a client-only install needs just numpy, msgpack and pydantic.
"""

from shared.codec import (
    ACCEPTED_IMAGE_DTYPES,
    CodecError,
    decode_tensor,
    encode_tensor,
    pack,
    unpack,
)
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    PROTOCOL_VERSION,
    REQUEST_ID_HEADER,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
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
    UsageCounts,
    UsageResponse,
    WireTensor,
)

__all__ = [
    "ACCEPTED_IMAGE_DTYPES",
    "MSGPACK_CONTENT_TYPE",
    "PROTOCOL_VERSION",
    "REQUEST_ID_HEADER",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "HealthResponse",
    "InfoResponse",
    "LogitsRequest",
    "LogitsResponse",
    "LossKind",
    "LossRequest",
    "LossResponse",
    "Routes",
    "TaskRequest",
    "TaskResponse",
    "CodecError",
    "UsageCounts",
    "UsageResponse",
    "WireTensor",
    "decode_tensor",
    "encode_tensor",
    "pack",
    "unpack",
]
