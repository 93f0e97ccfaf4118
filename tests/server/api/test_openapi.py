"""The served OpenAPI document: every route lists the error statuses it can answer with, each in the
one error body shape, and each status stands for codes the shared table gives that status; the image
routes' msgpack bodies are documented as what travels; and /docs works offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from shared.codec import ACCEPTED_IMAGE_DTYPES, pack, unpack
from shared.protocol import (
    ERROR_STATUS,
    MSGPACK_CONTENT_TYPE,
    ErrorCode,
    LogitsRequest,
    LogitsResponse,
    LossRequest,
    LossResponse,
    Routes,
    WireTensor,
)
from tests.helpers import KEYS, random_images

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
OPERATIONS = [
    ("get", Routes.INFO),
    ("post", Routes.TASKS),
    ("get", Routes.TASK),
    ("post", Routes.LOGITS),
    ("post", Routes.LOSS),
    ("get", Routes.USAGE),
    ("get", Routes.USAGE_PERIODS),
]


@pytest.fixture(scope="module")
def openapi(api: Any) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _errors(openapi: dict[str, Any], method: str, path: str) -> dict[int, dict[str, Any]]:
    responses = openapi["paths"][path][method]["responses"]
    return {int(status): body for status, body in responses.items() if int(status) >= 400}


def _schema(response: dict[str, Any]) -> dict[str, Any]:
    return response["content"]["application/json"]["schema"]


def test_loss_documents_its_error_statuses_with_the_error_body(openapi: dict[str, Any]) -> None:
    errors = _errors(openapi, "post", Routes.LOSS)
    assert {401, 413, 415, 422, 429, 503} <= set(errors)
    assert set(errors) == {400, 401, 403, 404, 408, 409, 410, 413, 415, 422, 429, 500, 503}
    for response in errors.values():
        assert _schema(response) == ERROR_BODY
    assert "invalid_labels" in errors[422]["description"]
    assert "queue_full" in errors[503]["description"] and "server_busy" in errors[503]["description"]
    assert "too_many_uploads" in errors[429]["description"]
    assert "request_timeout" in errors[408]["description"]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_error_a_route_documents_is_an_error_body_of_codes_with_that_status(
    openapi: dict[str, Any], method: str, path: str
) -> None:
    errors = _errors(openapi, method, path)
    assert {401, 500, 503} <= set(errors)  # every keyed route: the key, the unexpected, not ready
    for status, response in errors.items():
        assert _schema(response) == ERROR_BODY, f"{method} {path} {status}"
        codes = response["description"].split(": ", 1)[1].split(", ")
        assert codes and all(ERROR_STATUS[ErrorCode(code)] == status for code in codes), response


@pytest.mark.parametrize("path", [Routes.TASKS, Routes.LOGITS, Routes.LOSS])
def test_the_routes_an_access_level_can_refuse_document_access_denied(
    openapi: dict[str, Any], path: str
) -> None:
    errors = _errors(openapi, "post", path)
    assert "access_denied" in errors[403]["description"]


def test_every_reference_in_the_document_resolves(openapi: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            yield from [node["$ref"]] if "$ref" in node else []
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = openapi["components"]["schemas"]
    found = set(refs(openapi))
    assert "#/components/schemas/Access" in found  # the task body's access, as a component
    for ref in found:
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    task_body = openapi["paths"][Routes.TASKS]["post"]["requestBody"]["content"]["application/json"]
    assert task_body["schema"] == {"$ref": "#/components/schemas/TaskRequest"}


def test_no_route_documents_fastapis_own_validation_shape(openapi: dict[str, Any]) -> None:
    # The app answers FastAPI's validation errors in ErrorBody too; HTTPValidationError never goes out.
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_health_documents_its_503_as_a_health_response(openapi: dict[str, Any]) -> None:
    errors = _errors(openapi, "get", Routes.HEALTH)
    assert _schema(errors[503]) == {"$ref": "#/components/schemas/HealthResponse"}
    assert _schema(errors[500]) == ERROR_BODY


MSGPACK_ROUTES = [
    (Routes.LOGITS, LogitsRequest, LogitsResponse),
    (Routes.LOSS, LossRequest, LossResponse),
]


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert schema["$ref"].startswith(prefix), schema
    return openapi["components"]["schemas"][schema["$ref"].removeprefix(prefix)]


@pytest.mark.parametrize(("path", "request_model", "answer_model"), MSGPACK_ROUTES, ids=["logits", "loss"])
def test_the_image_routes_document_msgpack_bodies_and_answers(
    openapi: dict[str, Any], path: str, request_model: type[BaseModel], answer_model: type[BaseModel]
) -> None:
    operation = openapi["paths"][path]["post"]
    body, answer = operation["requestBody"], operation["responses"]["200"]
    assert body["required"] is True
    assert set(body["content"]) == {MSGPACK_CONTENT_TYPE} == set(answer["content"])  # no JSON claimed
    request_schema = _resolve(openapi, body["content"][MSGPACK_CONTENT_TYPE]["schema"])
    answer_schema = _resolve(openapi, answer["content"][MSGPACK_CONTENT_TYPE]["schema"])
    assert set(request_schema["properties"]) == set(request_model.model_fields)
    assert set(answer_schema["properties"]) == set(answer_model.model_fields)
    for text in (body["description"], answer["description"]):  # the tensor map encoding, spelled out
        assert "little-endian" in text and all(dtype in text for dtype in ACCEPTED_IMAGE_DTYPES)
    tensor = _resolve(openapi, request_schema["properties"]["images"])
    assert set(tensor["properties"]) == set(tensor["required"]) == {"shape", "dtype", "data"}
    assert tensor["additionalProperties"] is False


def test_the_documented_msgpack_schemas_are_what_travels(openapi: dict[str, Any], api: Any) -> None:
    key = {"Authorization": f"Bearer {KEYS[0]}"}
    task_id = api.post(Routes.TASKS, json={"class_names": ["a", "b"]}, headers=key).json()["task_id"]
    sent = {"images": WireTensor.from_numpy(random_images(2, "uint8")).model_dump(), "labels": [0, 1]}
    headers = {**key, "Content-Type": MSGPACK_CONTENT_TYPE}
    response = api.post(Routes.LOSS.format(task_id=task_id), content=pack(sent), headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == MSGPACK_CONTENT_TYPE
    answer = unpack(response.content)
    operation = openapi["paths"][Routes.LOSS]["post"]
    body, ok = operation["requestBody"], operation["responses"]["200"]
    request_schema = _resolve(openapi, body["content"][MSGPACK_CONTENT_TYPE]["schema"])
    answer_schema = _resolve(openapi, ok["content"][MSGPACK_CONTENT_TYPE]["schema"])
    # What was sent holds every required field and nothing undocumented; what came back, every field.
    assert set(request_schema["required"]) <= set(sent) <= set(request_schema["properties"])
    assert set(answer) == set(answer_schema["required"]) == set(answer_schema["properties"])
    tensor_schema = _resolve(openapi, answer_schema["properties"]["losses"])
    assert set(answer["losses"]) == set(tensor_schema["properties"])
    assert isinstance(answer["losses"]["data"], bytes)  # msgpack bin: a binary string in the schema
    assert tensor_schema["properties"]["data"]["format"] == "binary"


def test_docs_load_only_local_assets_and_the_app_serves_them(api: Any) -> None:
    page = api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert "/openapi.json" in urls and len(urls) == 4  # the script, the style, the icon, the document
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = api.get(url)
        assert asset.status_code == 200, url
        assert kinds[Path(url).suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
        if url != "/openapi.json":  # the installed package's own file, byte for byte
            assert asset.content == (Path(swagger_ui_path) / Path(url).name).read_bytes()
    assert api.get("/redoc").status_code == 404  # no ReDoc: no installed package ships it
