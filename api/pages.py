"""What a browser gets: the page at ``/`` and the API docs, all served by the app itself (no CDN).

- ``GET /`` (:func:`api.routes.health.root`) answers ``api/static/index.html`` when the client's
  ``Accept`` ranks HTML above JSON (:func:`prefers_html`: a browser's navigation), the JSON status
  otherwise (curl, scripts, ``*/*``). The page uploads a file or a microphone recording to
  ``/predict`` and draws the answer; its script, style and the model's published figures
  (``trust.json``) are under ``/static``.
- ``/docs`` and ``/redoc``: FastAPI's own Swagger UI and ReDoc pages, pointed at the built files
  that the ``fastapi-offline`` wheel ships (Swagger UI 5.32.6, Apache-2.0; ReDoc 2.5.3, MIT),
  mounted at ``/static/docs``. FastAPI's defaults would load them from a CDN. ReDoc's bundle still
  draws Redocly's logo from its CDN in the sidebar; it is served with that one URL replaced by an
  empty ``data:`` URL (the image then hides itself), so nothing leaves the machine.

Everything here is an open path (:data:`api.middleware.OPEN_PATHS`, ``OPEN_PREFIXES``): no API key,
no rate limit. The page itself asks for the key and sends it with each upload.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_URL = "/static/docs"
DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL = "/docs", "/docs/oauth2-redirect", "/redoc"
REDOC_JS = "redoc.standalone.js"
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"  # the bundle's only fetch from elsewhere

HTML_TYPES = ("text/html", "application/xhtml+xml")
# The page loads nothing from elsewhere, and may not: scripts, styles, fetches and media from this
# origin only (blob: for the recording played back before it is sent).
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _quality(ranges: list[tuple[str, float]], media_type: str) -> float:
    """The q the most specific of ``ranges`` that matches ``media_type`` gives it (RFC 9110 12.5.1), 0 if none."""
    kind = media_type.split("/")[0] + "/*"
    for wanted in (media_type, kind, "*/*"):
        matches = [q for name, q in ranges if name == wanted]
        if matches:
            return max(matches)
    return 0.0


def prefers_html(accept: str | None) -> bool:
    """True when ``accept`` ranks HTML (text/html, application/xhtml+xml) strictly above JSON.

    A browser's navigation (``text/html,...,*/*;q=0.8``) does; no header, ``*/*`` (curl, httpx),
    ``application/json`` and ties do not, so every client that read the JSON status still does.
    """
    if not accept:
        return False
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        name, *params = part.split(";")
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if name.strip():
            ranges.append((name.strip().lower(), quality))
    html = max(_quality(ranges, media_type) for media_type in HTML_TYPES)
    return html > 0 and html > _quality(ranges, "application/json")


def page_response() -> FileResponse:
    """``index.html``, which varies with ``Accept`` (the same URL answers JSON to other clients)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={"Vary": "Accept", "Content-Security-Policy": PAGE_POLICY,
                                 "Cache-Control": "no-cache"})


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get(DOCS_URL)
def swagger_ui(request: Request) -> HTMLResponse:
    root = _prefix(request)
    app = request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        # no badge that would send the schema's URL to validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
    )


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@cache
def redoc_bundle() -> bytes:
    """ReDoc's bundle with the logo it would fetch from Redocly's CDN replaced by an empty image."""
    return (DOCS_ASSETS_DIR / REDOC_JS).read_bytes().replace(REDOC_LOGO_URL, b"data:,")


@router.get(f"{DOCS_ASSETS_URL}/{REDOC_JS}")  # before the mount of the rest of DOCS_ASSETS_DIR
def redoc_js() -> Response:
    return Response(redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


@router.get(REDOC_URL)
def redoc(request: Request) -> HTMLResponse:
    root = _prefix(request)
    app = request.app
    return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                          redoc_js_url=f"{root}{DOCS_ASSETS_URL}/{REDOC_JS}",
                          redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False)


def install_pages(app: FastAPI) -> None:
    """Mount the static files and add /docs, /docs/oauth2-redirect and /redoc. The app must be made with
    ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off)."""
    app.include_router(router)  # first: its patched ReDoc bundle comes before the mount's file
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")  # before /static
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
