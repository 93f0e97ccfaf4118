"""The tensor codec: exact round trips, named errors, and no exception but CodecError on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codec import (
    ACCEPTED_IMAGE_DTYPES,
    CodecError,
    decode_tensor,
    encode_tensor,
    pack,
    unpack,
)
from shared.protocol import WireTensor

WIRE_DTYPES = ("float32", "float16", "uint8", "int64")
SHAPES = [(), (1,), (7,), (2, 5), (1, 3, 4, 4), (3, 3, 8, 6), (0,), (0, 3, 4, 4), (2, 0, 5), (4, 3, 0, 0)]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if dtype == "int64":
        return rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _assert_identical(decoded: np.ndarray, original: np.ndarray) -> None:
    assert isinstance(decoded, np.ndarray)
    assert decoded.shape == original.shape
    assert decoded.dtype == np.dtype(original.dtype.name).newbyteorder("<")
    assert decoded.dtype.name == original.dtype.name
    # Bit-for-bit: catches a lossy cast that array_equal would forgive (and compares NaNs too).
    expected = np.ascontiguousarray(original, dtype=decoded.dtype)
    assert decoded.tobytes() == expected.tobytes()
    assert np.array_equal(decoded, original, equal_nan=decoded.dtype.kind == "f")


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_encode_decode_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    array = _random(shape, dtype)
    wire = encode_tensor(array)
    assert wire["shape"] == list(shape)
    assert wire["dtype"] == dtype
    assert isinstance(wire["data"], bytes)
    assert len(wire["data"]) == array.nbytes
    _assert_identical(decode_tensor(wire), array)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_through_msgpack(dtype: str, shape: tuple[int, ...]) -> None:
    array = _random(shape, dtype, seed=1)
    payload = pack({"images": encode_tensor(array), "extra": [1, "two"]})
    assert isinstance(payload, bytes)
    obj = unpack(payload)
    assert obj["extra"] == [1, "two"]
    _assert_identical(decode_tensor(obj["images"]), array)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_through_wire_tensor(dtype: str, shape: tuple[int, ...]) -> None:
    array = _random(shape, dtype, seed=2)
    model = WireTensor.from_numpy(array)
    _assert_identical(model.to_numpy(), array)
    # And across the wire as a pydantic model, as the SDK and server do it.
    again = WireTensor.model_validate(unpack(pack(model.model_dump())))
    assert again == model
    _assert_identical(again.to_numpy(), array)


@pytest.mark.parametrize("dtype", ACCEPTED_IMAGE_DTYPES)
def test_image_batch_round_trips_with_image_dtypes_allowed(dtype: str) -> None:
    images = _random((5, 3, 16, 16), dtype, seed=3)
    decoded = WireTensor.from_numpy(images).to_numpy(allowed_dtypes=ACCEPTED_IMAGE_DTYPES)
    _assert_identical(decoded, images)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, :, ::2, :],
        lambda a: a[::-1],
        lambda a: a.transpose(0, 2, 3, 1),
        lambda a: a[1:, 1:, 1:, ::3],
        lambda a: np.asfortranarray(a),
        lambda a: a[:, 0],
    ],
    ids=["strided", "reversed", "transposed", "sliced", "fortran", "channel"],
)
def test_non_contiguous_inputs_round_trip(dtype: str, view) -> None:
    array = view(_random((4, 3, 6, 9), dtype, seed=4))
    assert not array.flags.c_contiguous
    _assert_identical(decode_tensor(unpack(pack(encode_tensor(array)))), array)
    _assert_identical(WireTensor.from_numpy(array).to_numpy(), array)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
def test_big_endian_input_is_sent_little_endian(dtype: str) -> None:
    array = _random((2, 3, 4), dtype, seed=5)
    big = array.astype(array.dtype.newbyteorder(">"))
    wire = encode_tensor(big)
    assert wire["data"] == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert np.array_equal(decode_tensor(wire), array)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_special_float_values_survive_bit_for_bit(dtype: str) -> None:
    array = np.array(
        [np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dtype).tiny, np.finfo(dtype).max], dtype=dtype
    )
    decoded = decode_tensor(unpack(pack(encode_tensor(array))))
    assert decoded.tobytes() == array.tobytes()
    assert np.signbit(decoded[3]) and not np.signbit(decoded[4])


def test_decoded_array_is_read_only() -> None:
    decoded = decode_tensor(encode_tensor(np.arange(6, dtype=np.float32)))
    assert not decoded.flags.writeable
    with pytest.raises(ValueError):
        decoded[0] = 1.0


def test_decode_accepts_bytearray_data() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    wire = encode_tensor(array)
    wire["data"] = bytearray(wire["data"])
    assert np.array_equal(decode_tensor(wire), array)


def test_max_dims_is_accepted_at_the_limit() -> None:
    decoded = decode_tensor({"shape": [1] * 8, "dtype": "uint8", "data": b"\x07"})
    assert decoded.shape == (1,) * 8
    assert decoded.item() == 7


@pytest.mark.parametrize("dtype", ["float64", "int32", "bool", "complex64", "uint16"])
def test_encode_rejects_dtypes_the_wire_does_not_know(dtype: str) -> None:
    with pytest.raises(CodecError, match=dtype):
        encode_tensor(np.zeros((2, 2), dtype=dtype))


# ---------------------------------------------------------------------------------------------
# Errors: CodecError with a message that names what is wrong
# ---------------------------------------------------------------------------------------------


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)
    with pytest.raises(ValueError):
        decode_tensor({"shape": [2], "dtype": "uint8", "data": b"\x00"})


@pytest.mark.parametrize(
    ("shape", "dtype", "nbytes"),
    [
        ((2, 3), "float32", 11),
        ((2, 3), "float32", 25),
        ((4,), "uint8", 0),
        ((0, 3), "float16", 2),
        ((1, 3, 2, 2), "int64", 95),
    ],
)
def test_wrong_byte_length_names_both_lengths(shape: tuple[int, ...], dtype: str, nbytes: int) -> None:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with pytest.raises(CodecError) as info:
        decode_tensor({"shape": list(shape), "dtype": dtype, "data": b"\x00" * nbytes})
    message = str(info.value)
    assert f"{nbytes} bytes" in message
    assert f"needs {expected}" in message
    assert dtype in message


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64", "bool", "float", "FLOAT32", ""])
def test_dtype_outside_the_allowed_list_is_named(dtype: str) -> None:
    itemsize = 8 if dtype in ("float64", "int64") else 4
    wire = {"shape": [2], "dtype": dtype, "data": b"\x00" * (2 * itemsize)}
    with pytest.raises(CodecError) as info:
        decode_tensor(wire, allowed_dtypes=ACCEPTED_IMAGE_DTYPES)
    message = str(info.value)
    assert repr(dtype) in message
    for allowed in ACCEPTED_IMAGE_DTYPES:
        assert allowed in message


def test_int64_is_known_but_not_an_image_dtype() -> None:
    wire = encode_tensor(np.arange(3, dtype=np.int64))
    assert decode_tensor(wire).tolist() == [0, 1, 2]
    with pytest.raises(CodecError, match="int64"):
        decode_tensor(wire, allowed_dtypes=ACCEPTED_IMAGE_DTYPES)


@pytest.mark.parametrize("dtype", [None, 32, b"float32", ["float32"], 1.5])
def test_non_string_dtype_is_rejected(dtype: object) -> None:
    with pytest.raises(CodecError, match="dtype"):
        decode_tensor({"shape": [1], "dtype": dtype, "data": b"\x00" * 4})


@pytest.mark.parametrize(
    "missing", [("shape",), ("dtype",), ("data",), ("shape", "data"), ("shape", "dtype", "data")]
)
def test_missing_keys_are_named(missing: tuple[str, ...]) -> None:
    wire = {"shape": [1], "dtype": "uint8", "data": b"\x00"}
    for key in missing:
        del wire[key]
    with pytest.raises(CodecError, match="missing") as info:
        decode_tensor(wire)
    message = str(info.value)
    for key in missing:
        assert key in message
    for key in {"shape", "dtype", "data"} - set(missing):
        assert key not in message.split("missing", 1)[1]


@pytest.mark.parametrize(
    "shape",
    [[-1], [2, -3], [True, 2], [2, False], [2.0], [1, 2.5], ["2"], [None], [[2]], [b"\x02"]],
    ids=str,
)
def test_bad_shape_entries_are_rejected(shape: list) -> None:
    with pytest.raises(CodecError, match="shape") as info:
        decode_tensor({"shape": shape, "dtype": "uint8", "data": b""})
    assert "non-negative integers" in str(info.value)


@pytest.mark.parametrize("shape", [None, 3, "3", b"\x03", {"0": 3}])
def test_shape_that_is_not_a_list_is_rejected(shape: object) -> None:
    with pytest.raises(CodecError, match="shape must be a list") as info:
        decode_tensor({"shape": shape, "dtype": "uint8", "data": b"\x00" * 3})
    assert type(shape).__name__ in str(info.value)


@pytest.mark.parametrize("ndim", [9, 10, 64])
def test_too_many_dims_is_rejected(ndim: int) -> None:
    with pytest.raises(CodecError, match=f"{ndim} dimensions") as info:
        decode_tensor({"shape": [1] * ndim, "dtype": "uint8", "data": b"\x00"})
    assert "at most 8" in str(info.value)


@pytest.mark.parametrize("data", ["\x00\x00", [0, 0], None, 2, {"0": 0}], ids=repr)
def test_non_binary_data_is_rejected(data: object) -> None:
    with pytest.raises(CodecError, match="binary") as info:
        decode_tensor({"shape": [2], "dtype": "uint8", "data": data})
    assert type(data).__name__ in str(info.value)


@pytest.mark.parametrize("obj", [None, [1, "uint8", b"\x00"], b"\x00", "tensor", 3, 1.0, True], ids=repr)
def test_non_mapping_is_rejected(obj: object) -> None:
    with pytest.raises(CodecError, match="must be a map") as info:
        decode_tensor(obj)
    assert type(obj).__name__ in str(info.value)


@pytest.mark.parametrize(
    "shape", [[2**63, 0], [2**64 - 1, 0], [0, 2**63], [2**40, 2**40, 0], [2**31, 2**31, 2**31, 0]], ids=str
)
def test_zero_size_shape_too_large_for_numpy_raises_codec_error(shape: list[int]) -> None:
    # The byte count (0) matches, but numpy cannot build the array: still a CodecError.
    with pytest.raises(CodecError, match="shape"):
        decode_tensor({"shape": shape, "dtype": "uint8", "data": b""})


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a", b"\x01\x02", b"\x81\x01\x02", b"\xdb\xff\xff\xff\xff"],
    ids=repr,
)
def test_unpack_malformed_msgpack_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError, match="not valid msgpack"):
        unpack(payload)


def test_pack_keeps_bytes_binary_and_str_text() -> None:
    obj = unpack(pack({"b": b"\xff\x00", "s": "\u00e9", "n": None, "l": [1, 2.5, True]}))
    assert obj == {"b": b"\xff\x00", "s": "\u00e9", "n": None, "l": [1, 2.5, True]}
    assert isinstance(obj["b"], bytes) and isinstance(obj["s"], str)


# ---------------------------------------------------------------------------------------------
# Properties: on any input, either a well-formed result or CodecError, never anything else
# ---------------------------------------------------------------------------------------------

MSGPACK_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
MSGPACK_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    MSGPACK_INT,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=64),
)
MSGPACK_OBJECTS = st.recursive(
    MSGPACK_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=30,
)
# Small sizes, numpy's limits (a zero elsewhere keeps the byte count at 0), and anything else.
EDGE_DIMS = st.sampled_from([0, 0, 1, 2, 3, -1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
DIMS = st.one_of(st.integers(0, 4), EDGE_DIMS, MSGPACK_INT, st.booleans(), st.floats(-3, 3), st.none())
DTYPE_NAMES = st.one_of(
    st.sampled_from([*WIRE_DTYPES, "float64", "int32", "bool", "<f4", "f4"]), st.text(max_size=10)
)
ALLOWED = st.sampled_from([None, ACCEPTED_IMAGE_DTYPES, ("uint8",)])


def _check_decode(obj: object, allowed: tuple[str, ...] | None) -> None:
    try:
        array = decode_tensor(obj, allowed_dtypes=allowed)
    except CodecError as exc:
        assert str(exc)
        return
    assert isinstance(array, np.ndarray)
    assert array.nbytes == len(obj["data"])
    assert array.shape == tuple(obj["shape"])
    assert array.dtype.name == obj["dtype"]
    assert allowed is None or obj["dtype"] in allowed


@FAST
@given(st.binary(max_size=256))
def test_unpack_arbitrary_bytes_returns_or_raises_codec_error(payload: bytes) -> None:
    try:
        unpack(payload)
    except CodecError as exc:
        assert "not valid msgpack" in str(exc)


@FAST
@given(MSGPACK_OBJECTS, st.integers(0, 64), st.binary(max_size=8))
def test_unpack_truncated_or_extended_msgpack(obj: object, cut: int, tail: bytes) -> None:
    payload = pack(obj)
    for candidate in (payload[: max(0, len(payload) - cut)], payload + tail):
        try:
            unpack(candidate)
        except CodecError:
            pass
    assert pack(unpack(payload)) == payload  # the untouched payload still round-trips exactly


@FAST
@given(MSGPACK_OBJECTS, ALLOWED)
def test_decode_arbitrary_objects_returns_or_raises_codec_error(obj: object, allowed) -> None:
    _check_decode(obj, allowed)
    # The same object after a real msgpack round trip (tuples become lists, etc.).
    _check_decode(unpack(pack(obj)), allowed)


@FAST
@given(
    st.fixed_dictionaries(
        {
            "shape": st.one_of(st.lists(DIMS, max_size=10), MSGPACK_OBJECTS),
            "dtype": st.one_of(DTYPE_NAMES, MSGPACK_OBJECTS),
            "data": st.one_of(st.binary(max_size=128), MSGPACK_OBJECTS),
        },
        optional={"extra": MSGPACK_OBJECTS},
    ),
    ALLOWED,
)
def test_decode_tensor_shaped_maps_returns_or_raises_codec_error(obj: dict, allowed) -> None:
    _check_decode(obj, allowed)


@FAST
@given(
    dtype=st.sampled_from(WIRE_DTYPES),
    shape=st.lists(st.integers(0, 4), max_size=4),
    new_shape=st.one_of(st.none(), st.lists(DIMS, max_size=10)),
    new_dtype=st.one_of(st.none(), DTYPE_NAMES),
    cut=st.integers(0, 16),
    tail=st.binary(max_size=16),
    allowed=ALLOWED,
)
def test_mutated_valid_tensor_returns_or_raises_codec_error(
    dtype: str, shape: list[int], new_shape, new_dtype, cut: int, tail: bytes, allowed
) -> None:
    array = _random(tuple(shape), dtype)
    wire = unpack(pack(encode_tensor(array)))
    _check_decode(wire, allowed)  # the unmutated map decodes, unless its dtype is not allowed
    if allowed is None or dtype in allowed:
        _assert_identical(decode_tensor(wire, allowed_dtypes=allowed), array)
    if new_shape is not None:
        wire["shape"] = new_shape
    if new_dtype is not None:
        wire["dtype"] = new_dtype
    wire["data"] = wire["data"][: max(0, len(wire["data"]) - cut)] + tail
    _check_decode(wire, allowed)
    _check_decode(unpack(pack(wire)), allowed)


@FAST
@given(
    shape=st.lists(
        st.one_of(st.integers(0, 3), EDGE_DIMS.filter(lambda d: d >= 0), st.integers(0, 2**64 - 1)),
        max_size=9,
    ),
    dtype=st.sampled_from(WIRE_DTYPES),
    extra=st.integers(-2, 2),
)
def test_well_typed_shapes_of_any_size_return_or_raise_codec_error(
    shape: list[int], dtype: str, extra: int
) -> None:
    # Every entry is a valid msgpack uint, so only the sizes can go wrong (including a zero-size
    # shape whose other dimensions numpy cannot represent).
    needed = math.prod(shape) * np.dtype(dtype).itemsize
    nbytes = needed + extra if 0 <= needed + extra <= 4096 else 0
    _check_decode({"shape": shape, "dtype": dtype, "data": b"\x01" * nbytes}, None)
