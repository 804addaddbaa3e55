"""Every error leaves as ``{"error_code": ..., "message": ...}`` with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from soundsentry.errors import SoundSentryError

log = logging.getLogger("api")


def error_response(status_code: int, error_code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status_code, headers=headers)


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body", "query", "form"))
        if item.get("type") == "missing":
            parts.append(f"the multipart form field '{location}' is required")
        else:
            parts.append(f"'{location}': {item.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) + ". See GET /docs for the expected form fields."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SoundSentryError)
    async def _library_error(request: Request, error: SoundSentryError) -> JSONResponse:
        if error.status_code >= 500:
            log.error("%s %s: %s", request.method, request.url.path, error.message)
        headers = {"Retry-After": "5"} if error.status_code == 503 else None
        return error_response(error.status_code, error.error_code, error.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail),
                              getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "The server failed on this request; it has been logged.")
