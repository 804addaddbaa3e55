"""Pure ASGI middleware that decide before the request body is read (so a refused upload costs
neither disk nor CPU). From the outside in:

1. CORS (Starlette's), so browsers can read every answer below, ``Retry-After`` included;
2. :class:`AccessMiddleware`: ``X-API-Key`` (when keys are configured) → 401 ``unauthorized``;
   per-client token bucket (when a rate is configured) → 429 ``rate_limited``;
3. :class:`ShedMiddleware`: detection slots and queue all taken → 503 ``server_busy``;
4. :class:`BodyLimitMiddleware`: ``Content-Length`` over the route's limit → 413 ``file_too_large``,
   and the same once a body without (or with a lying) ``Content-Length`` streams past it;
5. :class:`BodyTimeoutMiddleware` (innermost): a pause longer than ``body_timeout_s`` between two
   pieces of the body → 408 ``body_timeout``, and the connection is closed.

``/`` , ``/health``, ``/metrics``, the OpenAPI pages and ``/static/`` (the page's and the docs' files) stay
open (no key, no rate limit). Outside all
of these (outermost, in ``api.main``) runs :class:`api.observability.ObservabilityMiddleware`: the
request id, the metrics and the access line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.config import is_chunk_path
from api.errors import RequestBodyTooLarge, error_response, status_of
from api.limits import AdmissionGate, TokenBuckets

log = logging.getLogger("api")

OPEN_PATHS = frozenset({"/", "/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# the page's and the docs' files (api/pages.py): static, the same for everyone
OPEN_PREFIXES = ("/static/",)
DETECTION_PATHS = frozenset({"/predict", "/batch-predict"})
API_KEY_HEADER = "x-api-key"


def client_address(scope: Scope) -> str:
    """The peer's IP: the client's, or behind a reverse proxy listed in ``SOUNDSENTRY_TRUSTED_PROXIES``
    the client that proxy names in ``X-Forwarded-For`` (``python -m api.server`` sets that up)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, error_code: str, message: str,
                  headers: dict[str, str] | None = None) -> None:
    await error_response(status, error_code, message, headers)(scope, receive, send)


class AccessMiddleware:
    """API keys (compared as SHA-256 digests in constant time) and per-client rate limiting.

    The rate-limit bucket is the API key when a valid one is sent, else the client IP, so guessing
    keys is rate-limited too. Keys are never logged.
    """

    def __init__(self, app: ASGIApp, key_digests: frozenset[bytes], buckets: TokenBuckets | None) -> None:
        self.app = app
        self.key_digests = key_digests
        self.buckets = buckets

    def _valid(self, key: str) -> bytes | None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for known in self.key_digests:  # no early exit: the time does not depend on which key matched
            matched |= hmac.compare_digest(digest, known)
        return digest if matched else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES)
                or not (self.key_digests or self.buckets)):
            await self.app(scope, receive, send)
            return
        client = f"ip:{client_address(scope)}"
        authorised = not self.key_digests
        key = Headers(scope=scope).get(API_KEY_HEADER)
        if self.key_digests and key:
            digest = self._valid(key)
            if digest is not None:
                authorised, client = True, f"key:{digest.hex()[:16]}"
        if self.buckets is not None:
            wait_s = self.buckets.take(client)
            if wait_s > 0:
                retry_after = TokenBuckets.retry_after(wait_s)
                log.info("rate limited %s on %s %s (retry after %d s)", client, scope["method"], scope["path"],
                         retry_after)
                await _answer(scope, receive, send, 429, "rate_limited",
                              f"Too many requests from this client: the limit is {self.buckets.rate_per_s * 60:g} "
                              f"per minute (bursts of {self.buckets.burst:g}). Retry in {retry_after} s.",
                              {"Retry-After": str(retry_after)})
                return
        if not authorised:
            log.warning("unauthorised %s %s from %s (%s API key)", scope["method"], scope["path"],
                        client_address(scope), "invalid" if key else "no")
            message = ("This endpoint needs an API key: send it in the X-API-Key header. " if not key else
                       "The X-API-Key sent is not valid; check it for typos or ask the operator for a key. ")
            await _answer(scope, receive, send, 401, "unauthorized", message + "GET / and GET /health are open.",
                          {"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
            return
        await self.app(scope, receive, send)


class ShedMiddleware:
    """Refuse a detection request at once, before its body is read, while the gate is saturated."""

    def __init__(self, app: ASGIApp, gate: AdmissionGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and (scope["path"] in DETECTION_PATHS or is_chunk_path(scope["path"]))
                and self.gate.saturated):
            busy = self.gate.busy("every slot is taken and the queue is full")
            await _answer(scope, receive, send, status_of(busy), busy.error_code, busy.message,
                          {"Retry-After": str(busy.retry_after_s)})
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 ``file_too_large`` for bodies over ``limit_for(path)`` bytes: on ``Content-Length`` before
    anything is read, else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], upload_limit_bytes: int) -> None:
        self.app = app
        self.limit_for = limit_for
        self.upload_limit_bytes = upload_limit_bytes

    def _message(self, path: str, size: int | None) -> str:
        size_text = f" ({size / 2**20:.1f} MiB)" if size is not None else ""
        return (f"The request body{size_text} is over the limit for {path}: uploads may be at most "
                f"{self.upload_limit_bytes / 2**20:g} MiB each. Send a shorter or more compressed recording "
                "(e.g. WEBM/Opus or MP3), or split it into parts.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.limit_for(path)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError(declared)
            except ValueError:
                await _answer(scope, receive, send, 400, "invalid_request",
                              f"The Content-Length header {declared[:40]!r} is not a byte count.")
                return
            if length > limit:
                await _answer(scope, receive, send, 413, "file_too_large", self._message(path, length))
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLarge(self._message(path, None))
            return message

        await self.app(scope, limited_receive, send)


class BodyTimedOut(StarletteHTTPException):
    """Raised from ``receive`` when the client paused too long between two pieces of the body. An
    HTTPException, so FastAPI's body parsing passes it on (anything else becomes a 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=408, detail=message, headers={"Connection": "close"})


class BodyTimeoutMiddleware:
    """408 ``body_timeout`` when the client sends nothing for ``timeout_s`` while the app waits for
    more of the request body (slow-body clients hold a connection, a spool file and, at shutdown, the
    process). Only pauses count: each piece restarts the clock, and once the body is complete the
    app may wait for a disconnect as long as it likes.

    The timeout raises :class:`BodyTimedOut` into the app; whatever answer the app's handlers make
    of it, the client gets 408 ``body_timeout`` with ``Connection: close`` (unless a response had
    already started)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_pending = True
        timed_out = False
        response_started = replaced = False
        message = (f"The request body stalled: nothing arrived for {self.timeout_s:g} s. Send the body without "
                   "pauses (or check the connection) and retry.")

        async def timed_receive() -> Message:
            nonlocal body_pending, timed_out
            if not body_pending:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):
                    received = await receive()
            except TimeoutError:
                timed_out = True
                log.info("%s %s from %s: no body data for %g s (408 body_timeout)", scope["method"], scope["path"],
                         client_address(scope), self.timeout_s)
                raise BodyTimedOut(message) from None
            if received["type"] != "http.request" or not received.get("more_body", False):
                body_pending = False
            return received

        async def answering_send(outgoing: Message) -> None:
            nonlocal response_started, replaced
            if replaced:
                return  # the rest of the app's own answer to the timeout
            if timed_out and not response_started and outgoing["type"] == "http.response.start":
                replaced = True  # whatever the app made of BodyTimedOut, the client gets the 408
                await _answer(scope, receive, send, 408, "body_timeout", message, {"Connection": "close"})
                return
            if outgoing["type"] == "http.response.start":
                response_started = True
            await send(outgoing)

        try:
            await self.app(scope, timed_receive, answering_send)
        except BodyTimedOut:
            if response_started or replaced:
                raise
            replaced = True
            await _answer(scope, receive, send, 408, "body_timeout", message, {"Connection": "close"})
