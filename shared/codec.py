"""msgpack framing and the tensor codec.

A tensor travels as a map ``{"shape": [...], "dtype": "float32", "data": <bytes>}`` holding the
array's little-endian, C-ordered buffer. Decoding checks the dtype, the shape and the byte length
before any array is built, so a malformed payload always raises :class:`CodecError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "ACCEPTED_IMAGE_DTYPES",
    "OUTPUT_DTYPE",
    "CodecError",
    "decode_tensor",
    "encode_tensor",
    "pack",
    "unpack",
]

# uint8 images mean value/255; float images are already in [0, 1].
ACCEPTED_IMAGE_DTYPES: tuple[str, ...] = ("float32", "float16", "uint8")
OUTPUT_DTYPE = "float32"
_KNOWN_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<") for name in ("float32", "float16", "uint8", "int64")
}
_MAX_NDIM = 8
# Bounds on what one body may unpack into: a 64 MB body of one-byte integers would otherwise become
# gigabytes of Python objects. Tensors travel as one binary blob, so real requests stay far below.
_UNPACK_LIMITS = {"max_array_len": 100_000, "max_map_len": 256, "max_str_len": 65_536, "max_ext_len": 0}


class CodecError(ValueError):
    """A payload that is not valid msgpack or not a well-formed tensor."""


def pack(obj: Any) -> bytes:
    """Serialise a msgpack-compatible object (bytes stay binary)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(payload: bytes | bytearray) -> Any:
    """Parse one msgpack object; anything malformed raises :class:`CodecError`."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises a zoo of types (ValueError, ExtraData, ...)
        raise CodecError(f"body is not valid msgpack ({type(exc).__name__}: {_short(exc)})") from None


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """Turn an array of a known dtype into its wire map."""
    name = array.dtype.name
    if name not in _KNOWN_DTYPES:
        raise CodecError(f"dtype {name!r} cannot be sent; use one of {sorted(_KNOWN_DTYPES)}")
    # np.ascontiguousarray would turn a 0-d array into shape (1,); asarray(order="C") keeps the shape.
    wire = np.asarray(array, dtype=_KNOWN_DTYPES[name], order="C")
    return {"shape": list(wire.shape), "dtype": name, "data": wire.tobytes()}


def decode_tensor(
    obj: Mapping[str, Any] | Any, *, allowed_dtypes: tuple[str, ...] | None = None
) -> np.ndarray:
    """Build a (read-only) array from a wire map, checking everything a sender can get wrong."""
    if not isinstance(obj, Mapping):
        raise CodecError(f"tensor must be a map with shape, dtype, data; got {type(obj).__name__}")
    missing = [key for key in ("shape", "dtype", "data") if key not in obj]
    if missing:
        raise CodecError(f"tensor is missing {', '.join(missing)}")
    shape = _check_shape(obj["shape"])
    dtype = _check_dtype(obj["dtype"], allowed_dtypes)
    data = obj["data"]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"tensor data must be binary; got {type(data).__name__}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise CodecError(
            f"tensor data has {len(data)} bytes; shape {tuple(shape)} of {dtype.name} needs {expected}"
        )
    try:
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. [2**63, 0]: zero bytes, but a dimension numpy cannot hold
        raise CodecError(f"tensor shape {tuple(shape)} cannot be built: {exc}") from exc


def _check_shape(shape: Any) -> list[int]:
    if not isinstance(shape, (list, tuple)):
        raise CodecError(f"tensor shape must be a list of integers; got {type(shape).__name__}")
    if len(shape) > _MAX_NDIM:
        raise CodecError(f"tensor has {len(shape)} dimensions; at most {_MAX_NDIM} are accepted")
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        raise CodecError(f"tensor shape must hold non-negative integers; got {_short(list(shape))}")
    return list(shape)


def _check_dtype(name: Any, allowed: tuple[str, ...] | None) -> np.dtype:
    choices = allowed if allowed is not None else tuple(_KNOWN_DTYPES)
    if not isinstance(name, str) or name not in choices:
        raise CodecError(f"tensor dtype must be one of {list(choices)}; got {_short(name)}")
    return _KNOWN_DTYPES[name]


def _short(value: Any, limit: int = 64) -> str:
    """A repr cut to ``limit`` characters: error messages never echo a sender's payload in full."""
    text = str(value) if isinstance(value, Exception) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
