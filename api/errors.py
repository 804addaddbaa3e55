"""Every error leaves as ``{"error_code": ..., "message": ..., "request_id": ...}`` with a fitting status
(``request_id``: the request's ``X-Request-ID``, see :mod:`api.observability`).

4xx: the client can fix it (the message says how). 5xx only for server faults, always with an
``error_code``: ``model_not_loaded``, ``decoder_unavailable``, ``storage_unavailable``,
``resources_exhausted`` (out of descriptors or processes), ``insufficient_memory``,
``processing_timeout``, ``server_busy`` (503, with ``Retry-After``) and ``internal_error`` (500,
logged with its traceback). An ``OSError`` that means the server ran short (EMFILE, ENFILE, ENOSPC,
ENOMEM, ...) anywhere on the request path is a 503, never a 500.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.observability import REQUEST_ID_HEADER, current_record, new_request_id, record_of
from soundsentry.errors import (
    AudioTooLongError,
    InputError,
    ModelLoadError,
    ServiceUnavailableError,
    SessionNotFoundError,
    SoundSentryError,
    UndecodableAudioError,
    UploadTooLargeError,
    resource_error,
)

log = logging.getLogger("api")

DEFAULT_RETRY_AFTER_S = 5
# OSErrors that mean the server is short of something, not that the code is wrong: answered 503.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EAGAIN,
                             errno.EROFS})


# the HTTP status of each library error class; a subclass takes its nearest listed ancestor's
STATUS_OF = {
    UploadTooLargeError: 413,
    AudioTooLongError: 413,
    UndecodableAudioError: 415,  # unsupported_format too
    SessionNotFoundError: 404,
    InputError: 400,
    ServiceUnavailableError: 503,  # storage_unavailable, processing_timeout, server_busy, ...
    ModelLoadError: 503,
    SoundSentryError: 500,
}


def status_of(error: SoundSentryError) -> int:
    return next(STATUS_OF[cls] for cls in type(error).__mro__ if cls in STATUS_OF)


def error_response(status_code: int, error_code: str, message: str,
                   headers: Mapping[str, str] | None = None, *, request_id: str | None = None) -> JSONResponse:
    """The JSON error answer; ``request_id`` defaults to the id of the request being served (and the
    error code is noted for its access line and metrics)."""
    record = current_record()
    if record is not None:
        record.error_code = error_code
        request_id = request_id or record.request_id
    body = {"error_code": error_code, "message": message, "request_id": request_id or new_request_id()}
    return JSONResponse(body, status_code=status_code, headers=dict(headers) if headers else None)


class RequestBodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in, once it passes the route's limit (see api.middleware)."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body", "query", "form"))
        if item.get("type") == "missing":
            parts.append(f"the multipart form field '{location}' is required")
        else:
            parts.append(f"'{location}': {item.get('msg', 'invalid')}")
    return ("Invalid request: " + "; ".join(parts) + ". Send multipart/form-data with the recording in the "
            "field 'audio' (or 'files' for /batch-predict); see GET /docs.")


def storage_unavailable(request: Request, cause: OSError) -> JSONResponse:
    """The upload could not be spooled to disk: log where and why, answer 503, try to repair.

    Out of descriptors (EMFILE/ENFILE) is ``resources_exhausted``; anything else ``storage_unavailable``."""
    spool = getattr(request.app.state, "spool", None)
    try:
        where = spool.directory if spool is not None else "the temp directory"
    except OSError:
        where = "the temp directory (none usable)"
    log.error("%s %s: cannot spool the upload to %s: %s", request.method, request.url.path, where, cause)
    if cause.errno in (errno.EMFILE, errno.ENFILE):
        return shortage_response(resource_error(cause, "store the upload"))
    if spool is not None:
        spool.check()  # re-makes a private directory that was removed, so the next request may work
    return error_response(
        503, "storage_unavailable",
        "The server cannot store the upload right now (its temp storage is full or not writable); this is "
        "a server fault and has been logged. Retry later.",
        {"Retry-After": str(DEFAULT_RETRY_AFTER_S)},
    )


def shortage_response(error: SoundSentryError) -> JSONResponse:
    return error_response(status_of(error), error.error_code, error.message,
                          {"Retry-After": str(DEFAULT_RETRY_AFTER_S)})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SoundSentryError)
    async def _library_error(request: Request, error: SoundSentryError) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            log.error("%s %s: %s %s", request.method, request.url.path, error.error_code, error.message)
        headers = None
        if status == 503:
            headers = {"Retry-After": str(getattr(error, "retry_after_s", DEFAULT_RETRY_AFTER_S))}
        return error_response(status, error.error_code, error.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        cause = error.__cause__
        if isinstance(cause, OSError):  # spooling the multipart body to disk failed: our fault
            return storage_unavailable(request, cause)
        status, detail = error.status_code, str(error.detail)
        headers = getattr(error, "headers", None)
        if status == 400:
            reason = detail if detail != "There was an error parsing the body" else "it is not valid multipart data"
            return error_response(400, "invalid_request",
                                  f"The request body could not be parsed: {reason.rstrip('.')}. Send "
                                  "multipart/form-data with the recording in the field 'audio'.", headers)
        if status == 404:
            return error_response(404, "not_found", f"There is no {request.url.path}; GET / lists the endpoints.",
                                  headers)
        if status == 405:
            return error_response(405, "method_not_allowed",
                                  f"{request.method} is not allowed on {request.url.path}; GET / lists the "
                                  "endpoints and their methods.", headers)
        if status == 413:
            return error_response(413, "file_too_large", detail, headers)
        return error_response(status, "http_error", detail, headers)

    @app.exception_handler(MemoryError)
    async def _out_of_memory(request: Request, error: MemoryError) -> JSONResponse:
        log.error("%s %s: out of memory", request.method, request.url.path)
        return error_response(503, "insufficient_memory",
                              "The server ran out of memory on this request; retry later or send shorter audio.",
                              {"Retry-After": str(DEFAULT_RETRY_AFTER_S)})

    @app.exception_handler(OSError)
    async def _os_error(request: Request, error: OSError) -> JSONResponse:
        if error.errno not in SHORTAGE_ERRNOS:
            return await _unexpected(request, error)
        log.error("%s %s: the server ran short: %s", request.method, request.url.path, error)
        return shortage_response(resource_error(error, "handle the request"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette answers this one outside the middleware (its outermost layer): name the request explicitly
        record = record_of(request.scope)
        request_id = record.request_id if record is not None else new_request_id()
        if record is not None:
            record.error_code = "internal_error"
        log.exception("unexpected error on %s %s (request %s)", request.method, request.url.path, request_id)
        return error_response(500, "internal_error", "The server failed on this request; it has been logged.",
                              {REQUEST_ID_HEADER: request_id}, request_id=request_id)
