"""``/docs`` without the internet: Swagger UI from the installed ``swagger-ui-bundle-v2`` package.

FastAPI's default page loads Swagger UI's script and style from a CDN, so offline it is blank; here
the page names only this server's own URLs and the package's files are served under
``/docs/assets``. Swagger UI 5 is needed to read the OpenAPI 3.1 document FastAPI writes (4.x cannot).
ReDoc is not served: no installed package ships it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # Swagger UI 5's files inside the installed package

__all__ = ["ASSETS_PATH", "DOCS_PATH", "install_docs"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` with its assets from the installed package (app built with
    ``docs_url=None`` so that FastAPI's CDN page is not registered too)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_path), name="docs-assets")
    title = f"{app.title} - Swagger UI"

    def docs(request: Request) -> HTMLResponse:
        # Behind a proxy that serves the app under a prefix, the page's URLs carry that prefix.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=title,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
