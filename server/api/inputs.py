"""Checks on request bodies: msgpack framing, image tensors and labels.

Every failure is an :class:`APIError` whose message names what was expected and what was received.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from server.errors import APIError, problems
from shared.codec import ACCEPTED_IMAGE_DTYPES, CodecError, unpack
from shared.protocol import ErrorCode, WireTensor

__all__ = ["check_images", "check_labels", "parse_json", "parse_msgpack", "validation_error"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_msgpack(body: bytes | bytearray, model: type[ModelT]) -> ModelT:
    try:
        obj = unpack(body)
    except CodecError as exc:
        raise APIError(ErrorCode.MALFORMED_BODY, str(exc)) from exc
    if not isinstance(obj, dict):
        raise APIError(ErrorCode.MALFORMED_BODY, f"body must be a msgpack map; got {type(obj).__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_json(body: bytes | bytearray, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> APIError:
    """422 listing the first few bad fields (never the input itself, nor library links)."""
    errors = [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    detail = problems(errors)
    fields = ", ".join(e["field"] for e in detail["errors"])
    more = f" and {len(errors) - len(detail['errors'])} more" if len(errors) > len(detail["errors"]) else ""
    return APIError(ErrorCode.VALIDATION_ERROR, f"invalid request fields: {fields}{more}", detail)


def check_images(wire: WireTensor, image_size: int, max_images: int) -> np.ndarray:
    """The decoded batch (N, 3, S, S); float batches must be finite and inside [0, 1]."""
    expected = f"(N, 3, {image_size}, {image_size})"
    shape = tuple(wire.shape)
    if len(shape) == 4 and shape[0] > max_images:
        raise APIError(
            ErrorCode.TOO_MANY_IMAGES,
            f"batch has {shape[0]} images; this server takes at most {max_images}",
            {"max_batch_images": max_images, "received": shape[0]},
        )
    if len(shape) != 4 or shape[0] < 1 or shape[1:] != (3, image_size, image_size):
        raise APIError(
            ErrorCode.INVALID_TENSOR,
            f"images must have shape {expected} with N >= 1; received {shape}",
            {"expected": expected, "received": list(shape)},
        )
    try:
        images = wire.to_numpy(allowed_dtypes=ACCEPTED_IMAGE_DTYPES)
    except CodecError as exc:
        raise APIError(ErrorCode.INVALID_TENSOR, f"images: {exc}") from exc
    if images.dtype != np.uint8:
        _check_unit_range(images)
    return images


# A float in [0, 1] has its sign bit clear and bits at most those of 1.0 (IEEE order is integer
# order for non-negative floats); NaN, Inf and negatives all have larger bits. One pass over the
# integers instead of three over the floats (numpy's float16 arithmetic is slow).
_UNIT_BITS: dict[np.dtype, tuple[np.dtype, int]] = {
    np.dtype("<f2"): (np.dtype("<u2"), 0x3C00),
    np.dtype("<f4"): (np.dtype("<u4"), 0x3F80_0000),
}


def _check_unit_range(images: np.ndarray) -> None:
    bits_of = _UNIT_BITS.get(images.dtype)
    if bits_of is not None and images.view(bits_of[0]).max() <= bits_of[1]:
        return  # the common case; -0.0 and every bad value take the slow path that names them
    if not np.isfinite(images).all():
        bad = int(np.size(images) - np.isfinite(images).sum())
        raise APIError(ErrorCode.INVALID_VALUES, f"images hold {bad} NaN or Inf values")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise APIError(
            ErrorCode.INVALID_VALUES,
            f"image values must lie in [0, 1] (pixels / 255); received range [{low}, {high}]",
            {"min": low, "max": high},
        )


def check_labels(labels: list[int], num_images: int, num_classes: int) -> np.ndarray:
    if len(labels) != num_images:
        raise APIError(ErrorCode.INVALID_LABELS, f"got {len(labels)} labels for {num_images} images")
    array = np.asarray(labels, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise APIError(
            ErrorCode.INVALID_LABELS,
            f"labels must lie in [0, {num_classes - 1}]; received range "
            f"[{int(array.min())}, {int(array.max())}]",
        )
    return array
