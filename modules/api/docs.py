"""`/docs`, `/redoc` and `/openapi.json`, served offline and behind the API's auth.

FastAPI's built-in documentation pages load Swagger UI and ReDoc from a CDN, so they are blank on
a machine without internet, and they are added outside any auth dependency. Serena builds the app
with them switched off and adds its own: the same pages (FastAPI's HTML helpers), their scripts
served from the pinned `fastapi-offline` wheel, and every route, assets included, guarded like
`/sdapi/v1`.
"""
from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from modules import errors

ASSETS_PATH = "/docs-assets"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def assets_folder() -> str:
    """The folder of the pinned `fastapi-offline` wheel that holds Swagger UI's and ReDoc's files."""
    import fastapi_offline
    return os.path.join(os.path.dirname(fastapi_offline.__file__), "static")


def add_docs_routes(app: FastAPI, dependencies: list[Any]) -> None:
    """Add `/openapi.json`, `/docs`, `/redoc` and their assets to `app`, each behind `dependencies`."""
    folder = assets_folder()

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png")

    async def redoc(request: Request) -> HTMLResponse:
        root = base(request)
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False)

    async def asset(name: str) -> FileResponse:
        if name not in _ASSETS:  # a fixed list: no name reaches the file system unchecked
            raise errors.NotFound(f"no documentation asset {name!r}", field="name")
        return FileResponse(os.path.join(folder, name), media_type=_ASSETS[name])

    for path, endpoint in (("/openapi.json", openapi), ("/docs", swagger), ("/redoc", redoc),
                           (ASSETS_PATH + "/{name}", asset)):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False, dependencies=dependencies)
