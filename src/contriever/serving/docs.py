"""API documentation at `/docs`, offline: Swagger UI 5 (it reads the OpenAPI 3.1 document FastAPI
writes; Swagger UI 4 cannot) from the files the `swagger-ui-bundle-v2` package installs. FastAPI's
own `/docs` loads them from a CDN; here nothing comes from outside, like the page.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

MIN_SWAGGER_UI = 5  # the first major version that reads OpenAPI 3.1
ASSETS = {  # fixed routes, fixed files: no request names a path
    "/docs-assets/swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "/docs-assets/swagger-ui.css": ("swagger-ui.css", "text/css"),
    "/docs-assets/favicon-32x32.png": ("favicon-32x32.png", "image/png"),
}


def swagger_ui_folder() -> Path:
    """The installed Swagger UI's folder; ImportError if it is missing or older than version 5."""
    from swagger_ui_bundle import swagger_ui_path

    folder = Path(str(swagger_ui_path))
    found = re.search(r"swagger-ui-(\d+)", folder.name)
    if not found or int(found.group(1)) < MIN_SWAGGER_UI:
        raise ImportError(
            f"the installed Swagger UI ({folder.name}) cannot read OpenAPI 3.1; "
            "pip uninstall swagger-ui-bundle && pip install swagger-ui-bundle-v2"
        )
    return folder


def docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    folder = swagger_ui_folder()

    def asset_route(content: bytes, media_type: str):
        async def asset() -> Response:
            return Response(content, media_type=media_type, headers={"Cache-Control": "max-age=86400"})

        return asset

    for route, (name, media_type) in ASSETS.items():
        # read once, at start: a request never touches the disk
        router.get(route)(asset_route((folder / name).read_bytes(), media_type))
    js, css, icon = ASSETS

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="contriever API",
            swagger_js_url=js,
            swagger_css_url=css,
            swagger_favicon_url=icon,
            swagger_ui_parameters={"persistAuthorization": True},
        )

    return router
