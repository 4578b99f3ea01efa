"""``/docs`` (Swagger UI) and ``/redoc`` served with local assets only (no CDN).

The scripts and styles come from the ``fastapi-offline`` package (Swagger UI 5 and ReDoc 2
bundles, installed with leadhub), served under ``/docs-assets/``; the pages name no other host.
The app is built with FastAPI's own CDN-backed doc routes turned off (``docs_url=None``,
``redoc_url=None``).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from consumers.api.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_PATH = "/docs-assets"
#: The files the pages load, and their media types.
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
         "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
TITLE = "leadhub API"


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI over ``/openapi.json``, its assets from this server."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{TITLE} — Swagger UI",
                               swagger_js_url=f"{ASSET_PATH}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSET_PATH}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSET_PATH}/favicon.png")


@router.get("/redoc")
def redoc() -> HTMLResponse:
    """ReDoc over ``/openapi.json``, its script from this server and no web fonts."""
    return get_redoc_html(openapi_url="/openapi.json", title=f"{TITLE} — ReDoc",
                          redoc_js_url=f"{ASSET_PATH}/redoc.standalone.js",
                          redoc_favicon_url=f"{ASSET_PATH}/favicon.png",
                          with_google_fonts=False)


@router.get(ASSET_PATH + "/{name}")
def asset(name: str) -> FileResponse:
    """One of the doc pages' assets (only the files listed in :data:`FILES`)."""
    if name not in FILES:
        raise NotFound("no such asset", code="NOT_FOUND")
    return FileResponse(ASSETS / name, media_type=FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})
