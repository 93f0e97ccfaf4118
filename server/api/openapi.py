"""The msgpack bodies in the OpenAPI document, so a generated client or an API fuzzer can use them.

FastAPI documents JSON bodies by itself; the image routes read and answer msgpack, which it cannot
see. Their request bodies and answers are declared here as ``application/msgpack`` with the schemas
of the shared pydantic models (``shared.protocol``), which ``describe_msgpack_models`` adds to the
document's components, and with the tensor map encoding of ``shared.codec`` spelled out. The task
route reads its JSON body itself (``server.api.inputs``), so its body is declared here too
(``json_body``), its schema among the same components: a schema inlined in a route could not refer to
the models it holds (``Access``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.codec import ACCEPTED_IMAGE_DTYPES, OUTPUT_DTYPE
from shared.protocol import (
    MSGPACK_CONTENT_TYPE,
    LogitsRequest,
    LogitsResponse,
    LossRequest,
    LossResponse,
    TaskRequest,
)

__all__ = [
    "MSGPACK_REQUESTS",
    "MSGPACK_RESPONSES",
    "TENSOR_ENCODING",
    "JSON_REQUESTS",
    "describe_msgpack_models",
    "json_body",
    "msgpack_answer",
    "msgpack_body",
    "msgpack_schemas",
]

MSGPACK_REQUESTS: tuple[type[BaseModel], ...] = (LogitsRequest, LossRequest)
MSGPACK_RESPONSES: tuple[type[BaseModel], ...] = (LogitsResponse, LossResponse)
JSON_REQUESTS: tuple[type[BaseModel], ...] = (TaskRequest,)  # JSON bodies the routes read themselves
_REF = "#/components/schemas/{model}"

TENSOR_ENCODING = (
    "Every tensor (WireTensor) is a msgpack map {shape, dtype, data}: shape a list of non-negative "
    "integers, dtype a numpy dtype name, data a msgpack bin holding the array's little-endian, C-ordered "
    "buffer, exactly prod(shape) x itemsize bytes. Images are (N, 3, S, S) at the image_size of "
    f"/v1/info, as {', '.join(ACCEPTED_IMAGE_DTYPES)} (uint8 means value/255, floats must lie in [0, 1]); "
    f"answers are {OUTPUT_DTYPE}."
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def msgpack_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its request body is ``model`` as a msgpack map."""
    return {
        "requestBody": {
            "required": True,
            "description": f"A msgpack map with the fields of {model.__name__}. {TENSOR_ENCODING}",
            "content": {MSGPACK_CONTENT_TYPE: {"schema": _ref(model)}},
        }
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its request body is ``model`` as JSON, read by the route itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}}}


def msgpack_answer(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses`` entry for its 200 answer: ``model`` as a msgpack map."""
    return {
        200: {
            "description": f"A msgpack map with the fields of {model.__name__}. {TENSOR_ENCODING}",
            "content": {MSGPACK_CONTENT_TYPE: {"schema": _ref(model)}},
        }
    }


def msgpack_schemas() -> dict[str, Any]:
    """The JSON schemas of the msgpack models, of ``JSON_REQUESTS`` and of the models they hold
    (WireTensor, LossKind, Access), each referring to the others as OpenAPI components: requests as
    they are read, answers as they are written."""
    reading: JsonSchemaMode = "validation"
    writing: JsonSchemaMode = "serialization"
    models = [(m, reading) for m in (*MSGPACK_REQUESTS, *JSON_REQUESTS)]
    models += [(m, writing) for m in MSGPACK_RESPONSES]
    _, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def _same_model(documented: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Whether two schemas of one name describe one model: FastAPI renders a model it documents itself
    (``Access``, held by ``TaskResponse``) with other details (``1000.0`` for ``1000``, no null
    defaults), so the fields and values are compared, not the text."""
    keys = ("title", "type", "enum")
    return all(documented.get(key) == ours.get(key) for key in keys) and set(
        documented.get("properties", {})
    ) == set(ours.get("properties", {}))


def describe_msgpack_models(app: FastAPI) -> None:
    """Add the msgpack models to ``app``'s OpenAPI components (the routes refer to them by name)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model_schema in msgpack_schemas().items():
                if not _same_model(components.setdefault(name, model_schema), model_schema):
                    raise ValueError(f"two different OpenAPI schemas are both named {name}")
            app.openapi_schema = schema  # built once, as FastAPI's own
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
