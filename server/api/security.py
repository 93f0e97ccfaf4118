"""The API key in the OpenAPI document: an HTTP bearer scheme, required by exactly the routes that
check a key, so Swagger UI's "Authorize" sends the key and a generated client knows it needs one.

The routes' key check (``server.api.routes.authenticate``) is itself a ``KeyScheme``: FastAPI documents
a dependency that is a ``SecurityBase`` as a security scheme, in the components and on every route
whose dependencies reach it, so which routes need a key follows from the route table, and no step is
added to a request (a separate ``HTTPBearer`` dependency would run on every keyed call for the sake of
the document alone). The check keeps reading the plain header and answering our own 401s.
"""

from __future__ import annotations

from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

__all__ = ["SCHEME_NAME", "KeyScheme"]

SCHEME_NAME = "apiKey"


class KeyScheme(SecurityBase):
    """Documented as ``{"type": "http", "scheme": "bearer"}``; a subclass's ``__call__`` checks the key."""

    def __init__(self) -> None:
        description = (
            "An API key, sent as 'Authorization: Bearer KEY'. A server run with no keys configured is "
            "open and charges every request to 'anonymous'."
        )
        self.model = HTTPBearerModel(description=description)
        self.scheme_name = SCHEME_NAME
