"""The API key in the OpenAPI document (issue 28): every route that answers 401 without a key declares
the bearer scheme, and every route that answers without one declares none, so Swagger UI's Authorize
and a generated client send the key where, and only where, it is needed. Which routes need a key is
found by asking the app itself, not from a list kept by hand."""

from __future__ import annotations

import re
from typing import Any

import pytest

from server.api.metrics import METRICS_PATH
from shared.protocol import Routes

BEARER = {"type": "http", "scheme": "bearer"}


@pytest.fixture(scope="module")
def openapi(api: Any) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _status_without_key(api: Any, method: str, path: str) -> int:
    # Keys are checked before anything else (a body, a task id), so any task id serves.
    url = re.sub(r"\{[^}]+\}", "no-such-id", path)
    return api.request(method.upper(), url).status_code


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method, path) for path, item in openapi["paths"].items() for method in item]


def _scheme_name(openapi: dict[str, Any]) -> str:
    schemes = openapi["components"]["securitySchemes"]
    assert len(schemes) == 1, schemes  # one way to send a key
    [(name, scheme)] = schemes.items()
    assert {field: scheme.get(field) for field in BEARER} == BEARER, scheme
    return name


def test_the_document_declares_one_bearer_scheme_and_no_document_wide_requirement(
    openapi: dict[str, Any],
) -> None:
    _scheme_name(openapi)
    assert "security" not in openapi  # a document-wide requirement would lock the open routes too


def test_every_keyed_route_declares_the_scheme_and_every_open_route_none(
    api: Any, openapi: dict[str, Any]
) -> None:
    name = _scheme_name(openapi)
    keyed, open_ = set(), set()
    for method, path in _operations(openapi):
        declared = openapi["paths"][path][method].get("security")
        if _status_without_key(api, method, path) == 401:
            keyed.add((method, path))
            assert declared == [{name: []}], (method, path, declared)
        else:
            open_.add((method, path))
            assert declared is None, (method, path, declared)
    # not vacuous: the app has both kinds, as the README describes them
    assert {("get", Routes.INFO), ("post", Routes.LOSS), ("get", Routes.USAGE)} <= keyed
    assert {("get", Routes.HEALTH), ("get", METRICS_PATH)} <= open_


def test_the_key_is_not_also_documented_as_a_header_parameter(openapi: dict[str, Any]) -> None:
    # The scheme carries it; a second "authorization" field in Swagger UI would be a second, empty way.
    for method, path in _operations(openapi):
        parameters = openapi["paths"][path][method].get("parameters", [])
        names = {p["name"].lower() for p in parameters if p["in"] == "header"}
        assert "authorization" not in names, (method, path)


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_the_pages_outside_the_document_are_open(api: Any, openapi: dict[str, Any], path: str) -> None:
    assert path not in openapi["paths"]
    assert api.get(path).status_code == 200
