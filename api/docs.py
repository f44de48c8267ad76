"""``/docs`` (Swagger UI) and ``/redoc`` served with their JavaScript and CSS from the API itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so they are blank wherever the browser has no
internet (an air-gapped cluster, a laptop on a plane). The ``fastapi-offline`` package ships both distributions
(the package is MIT-licensed; Swagger UI is Apache-2.0, ReDoc MIT); gpuq serves them under
``/static/docs``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from gpuq.api.body import with_body_schemas

ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_URL = "/static/docs"


def install_docs(app: FastAPI) -> None:
    """Add the docs pages and their assets to an app created with ``docs_url=None, redoc_url=None``, and the
    body models of the routes that read their own bodies (api/body.py) to its OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        return with_body_schemas(schema) if fresh else schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}{oauth2_redirect}",
                                   swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png")

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png", with_google_fonts=False)
