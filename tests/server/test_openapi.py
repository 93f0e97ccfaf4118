"""The served OpenAPI document: every route lists the error statuses it can answer with, each in the
one error body shape, and each status stands for codes the shared table gives that status."""

from __future__ import annotations

from typing import Any

import pytest

from shared.protocol import ERROR_STATUS, ErrorCode, Routes

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
OPERATIONS = [
    ("get", Routes.INFO),
    ("post", Routes.TASKS),
    ("get", Routes.TASK),
    ("post", Routes.LOGITS),
    ("post", Routes.LOSS),
    ("get", Routes.USAGE),
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
    assert set(errors) == {400, 401, 404, 409, 410, 413, 415, 422, 429, 500, 503}
    for response in errors.values():
        assert _schema(response) == ERROR_BODY
    assert "invalid_labels" in errors[422]["description"]
    assert "queue_full" in errors[503]["description"]


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


def test_no_route_documents_fastapis_own_validation_shape(openapi: dict[str, Any]) -> None:
    # The app answers FastAPI's validation errors in ErrorBody too; HTTPValidationError never goes out.
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_health_documents_its_503_as_a_health_response(openapi: dict[str, Any]) -> None:
    errors = _errors(openapi, "get", Routes.HEALTH)
    assert _schema(errors[503]) == {"$ref": "#/components/schemas/HealthResponse"}
    assert _schema(errors[500]) == ERROR_BODY
