"""Serve the API with connection limits: ``python -m api.server [--host 0.0.0.0] [--port 8000]``.

The one way to serve Sound Sentry (``make serve``, the Docker image and the benchmarks use it). It
runs uvicorn in this process, on h11, with the connection settings of
:class:`~api.core.config.Settings` (``SOUNDSENTRY_*``; the same ``Settings`` the app reads):

- uvicorn's own limits: ``h11_max_incomplete_event_size`` = ``max_header_bytes`` (httptools has no
  header size limit), ``timeout_keep_alive`` = ``keep_alive_timeout_s``, ``timeout_graceful_shutdown``
  = ``shutdown_timeout_s``, a 2048 listen backlog, and ``X-Forwarded-For``/``-Proto`` honoured only
  from ``trusted_proxies`` (``proxy_headers`` is off when that list is empty, so the peer is the client);
- added here, on uvicorn's H11 protocol class (:class:`LimitedH11Protocol`):

  * **request deadline**: a connection without a request in progress (new, between keep-alive
    requests once the client started sending, or draining a body the app refused) is closed when it
    has not completed its request headers within ``header_timeout_s``; trickling bytes does not
    extend it;
  * **connection cap**: at ``max_connections`` open connections a new one closes the least recently
    used connection that has no request in progress (idle, headers incomplete); when every one is
    busy, the new one gets 503 ``server_busy`` and is closed;
  * **header fields**: more than ``max_headers`` fields, or a request line + headers over
    ``max_header_bytes``, get 431 ``headers_too_large`` (JSON) and the connection is closed;
- ``RLIMIT_NOFILE``: the soft limit is raised to the hard one at start-up, and ``max_connections``
  is lowered (with a warning) when it would not leave room for the listen backlog and the process's
  own files, so ``accept()`` never fails with EMFILE;
- shutdown: on SIGTERM/SIGINT requests in flight get ``shutdown_timeout_s``; then the connections
  of those not yet answered are closed (not uvicorn's 500) and the requests cancelled; a watchdog
  ends the process ``SHUTDOWN_GRACE_S`` later if anything still holds it (a running detection, a
  stuck lifespan shutdown).

The pause between two pieces of a request body (``body_timeout_s``) is bounded by
:class:`api.middleware.BodyTimeoutMiddleware`, inside the app.

Logging is set up here (:func:`api.observability.configure_logging`): the application's records at
``--log-level`` to stderr, and one JSON access line per request (logger ``soundsentry.access``, with
its request id) to stdout. uvicorn's own access log is off, so a request is not logged twice;
``--no-access-log`` silences the JSON lines too.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import resource
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.core.config import Settings, get_settings
from api.observability import configure_logging

log = logging.getLogger("api.server")

APP = "api.main:app"
BACKLOG = 2048
RESERVED_FDS = 256  # model files, pipes to ffmpeg, temp files, the listening socket, logs ...
SHUTDOWN_GRACE_S = 3.0  # after shutdown_timeout_s, before the watchdog ends the process
LOG_EVERY_S = 10.0  # at most one line per this about evicted / refused connections


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    max_header_bytes: int
    max_headers: int
    shutdown_timeout_s: float


Header = tuple[bytes, bytes]


def _error(error_code: str, message: str, *extra_headers: Header) -> tuple[list[Header], bytes]:
    """Headers and body of a JSON error answer that closes the connection (the app's error format; the
    request never reached the app, so its id is a fresh one)."""
    request_id = uuid.uuid4().hex
    body = json.dumps({"error_code": error_code, "message": message, "request_id": request_id}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), (b"x-request-id", request_id.encode()), *extra_headers]
    return headers, body


class LimitedConnection(h11.Connection):
    """h11's server side, with the request head bounded in bytes (also when it arrives whole, which
    h11 alone lets through) and in header fields. Remembers why it refused a request, so the
    protocol answers 431 ``headers_too_large`` instead of uvicorn's plain-text 400."""

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.limits = limits
        self.refusal: str | None = None
        self._too_large = (f"The request line and headers are over {limits.max_header_bytes} bytes, the limit of "
                           "this server; send fewer or shorter headers (cookies included).")

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as error:
            if error.error_status_hint == 431:
                self.refusal = self._too_large
            raise
        if type(event) is h11.Request:
            # h11 bounds only an *incomplete* head: one that arrives whole in a single read (up to 256 KiB)
            # passes, so measure the parsed one too (without the separators h11 has stripped).
            size = len(event.method) + len(event.target) + sum(len(n) + len(v) for n, v in event.headers.raw_items())
            if size > self.limits.max_header_bytes:
                self.refusal = self._too_large
            elif len(event.headers) > self.limits.max_headers:
                self.refusal = (f"The request has {len(event.headers)} header fields; this server accepts at most "
                                f"{self.limits.max_headers}.")
            if self.refusal is not None:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


class _CapStats:
    """Evictions and refusals since the last log line (one line per ``LOG_EVERY_S`` at most)."""

    def __init__(self) -> None:
        self.evicted = 0
        self.refused = 0
        self.logged_at = 0.0

    def note(self, *, evicted: int = 0, refused: int = 0, open_now: int, cap: int) -> None:
        self.evicted += evicted
        self.refused += refused
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_S:
            log.warning("connection cap reached (%d open, cap %d): closed %d idle connection(s) to make room and "
                        "refused %d new one(s) while all were busy, since the last such line", open_now, cap,
                        self.evicted, self.refused)
            self.evicted = self.refused = 0
            self.logged_at = now


class QuietBadRequests(logging.Filter):
    """uvicorn logs a warning for every malformed or refused request head (400/431), so a client could
    flood the log: pass one such line per ``LOG_EVERY_S``, with the count of those left out."""

    MESSAGE = "Invalid HTTP request received."

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.passed_at = -LOG_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = time.monotonic()
        if now - self.passed_at < LOG_EVERY_S:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{self.MESSAGE} ({self.dropped} more since the last such line)"
        self.dropped, self.passed_at = 0, now
        return True


class LimitedH11Protocol(H11Protocol):
    """uvicorn's H11 protocol with a request deadline, a connection cap and a header-field limit.

    Make one class per server with :func:`limited_protocol` (the class holds the limits and the
    server's open connections, least recently used first).
    """

    limits: ClassVar[ConnectionLimits]
    open_connections: ClassVar[OrderedDict[LimitedH11Protocol, None]]
    cap_stats: ClassVar[_CapStats]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = LimitedConnection(self.limits)
        self.request_deadline: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A request is in progress: its headers are in and its response is not complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def _track(self) -> None:
        """After any input or output: keep the LRU order and the request deadline up to date."""
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            if self in self.open_connections:
                self.open_connections.move_to_end(self)
        if self.busy or self.timeout_keep_alive_task is not None or self.transport.is_closing():
            self._cancel_deadline()  # a request runs, or uvicorn's keep-alive timer watches the idle connection
        elif self.request_deadline is None:
            self.request_deadline = self.loop.call_later(self.limits.header_timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self.request_deadline is not None:
            self.request_deadline.cancel()
            self.request_deadline = None

    def _deadline_passed(self) -> None:
        self.request_deadline = None
        if not self.busy and not self.transport.is_closing():
            log.debug("closing %s: no complete request headers within %g s", self.client, self.limits.header_timeout_s)
            self.transport.close()

    # -- the connection cap ------------------------------------------------------------------
    def _evict_one(self) -> bool:
        """Close the least recently used connection without a request in progress; False if none."""
        victim = next((c for c in self.open_connections if not c.busy), None)
        if victim is None:
            return False
        del self.open_connections[victim]
        victim._cancel_deadline()
        victim.transport.close()
        return True

    def _refuse(self) -> None:
        headers, body = _error(
            "server_busy", f"The server has {len(self.open_connections)} connections open, each with a request in "
            "progress; retry in 1 s.", (b"retry-after", b"1"))
        # h11 sends a response only after a request: write it raw
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\n" + head + b"\r\n" + body)
        self.transport.close()

    # -- uvicorn's protocol interface ----------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.open_connections) >= self.limits.max_connections:
            if self._evict_one():
                self.cap_stats.note(evicted=1, open_now=len(self.open_connections) + 1,
                                    cap=self.limits.max_connections)
            else:
                self.cap_stats.note(refused=1, open_now=len(self.open_connections), cap=self.limits.max_connections)
                self._refuse()
                return
        self.open_connections[self] = None
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_deadline()
        self.open_connections.pop(self, None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown begins: it closes idle connections and, ``shutdown_timeout_s``
        (+ 0.1 s) later, cancels the requests still running, answering 500 to those that have not
        started a response. Close those connections just before instead: the client sees the server
        go away (as from a proxy), not an internal error."""
        super().shutdown()
        if self.busy:
            self.loop.call_later(self.limits.shutdown_timeout_s, self._close_if_unanswered)

    def _close_if_unanswered(self) -> None:
        if self.cycle is not None and not self.cycle.response_started and not self.transport.is_closing():
            log.info("shutdown: closing %s, whose %s %s got no answer within %g s", self.client,
                     self.cycle.scope["method"], self.cycle.scope["path"], self.limits.shutdown_timeout_s)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        refusal, self.conn.refusal = self.conn.refusal, None
        if refusal is None:
            super().send_400_response(msg)
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers, body = _error("headers_too_large", refusal)
            response = h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large")
            try:
                self.transport.write(self.conn.send(response) + self.conn.send(h11.Data(data=body))
                                     + self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:  # pragma: no cover - a response was already under way
                pass
        self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """A :class:`LimitedH11Protocol` subclass for one server (its own limits and connection list)."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"limits": limits, "open_connections": OrderedDict(), "cap_stats": _CapStats()})


# ----------------------------------------------------------------------------- files and sizes


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
    return soft


def fit_to_fd_limit(max_connections: int, fd_limit: int) -> tuple[int, int]:
    """``(max_connections, backlog)`` that fit ``fd_limit`` open files.

    Each event-loop pass may accept up to ``backlog`` sockets before the cap closes the idle ones
    they displace, so a few backlogs' worth of descriptors stay free above the cap."""
    backlog = max(64, min(BACKLOG, (fd_limit - RESERVED_FDS) // 8))
    room = fd_limit - RESERVED_FDS - 4 * backlog
    if room < 16:
        raise SystemExit(f"the open-file limit ({fd_limit}) is too low to serve; raise it (ulimit -n, or "
                         "docker run --ulimit nofile=65536:65536) to a few thousand")
    if max_connections > room:
        log.warning("SOUNDSENTRY_MAX_CONNECTIONS=%d does not fit the open-file limit %d; using %d (raise the "
                    "limit: ulimit -n / docker run --ulimit nofile=...)", max_connections, fd_limit, room)
        return room, backlog
    return max_connections, backlog


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy settings: forwarded headers only from ``trusted_proxies`` (none by default)."""
    trusted = [entry.strip() for entry in settings.trusted_proxies if entry.strip()]
    if not trusted:
        return {"proxy_headers": False}
    for entry in trusted:
        if entry == "*":
            log.warning("SOUNDSENTRY_TRUSTED_PROXIES=*: every client may set X-Forwarded-For, so the rate limit "
                        "can be escaped; list the proxy addresses instead")
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as error:
            raise SystemExit(f"SOUNDSENTRY_TRUSTED_PROXIES: {entry!r} is not an IP address or network "
                             f"(e.g. 10.0.0.5 or 10.0.0.0/24): {error}") from None
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The limits uvicorn itself enforces, for ``uvicorn.Config`` / ``uvicorn.run``."""
    return {
        "http": "h11",
        "ws": "none",  # no WebSocket routes: upgrades are plain HTTP requests
        "lifespan": "on",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        "backlog": BACKLOG,
        **proxy_options(settings),
    }


# ----------------------------------------------------------------------------- the server


class BoundedShutdownServer(uvicorn.Server):
    """uvicorn's server; the first SIGTERM/SIGINT also starts a watchdog that ends the process if the
    graceful shutdown (``timeout_graceful_shutdown``, then the lifespan shutdown) overruns ``deadline_s``."""

    def __init__(self, config: uvicorn.Config, deadline_s: float) -> None:
        super().__init__(config)
        self.deadline_s = deadline_s
        self._watchdog: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.deadline_s, self._force_exit)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force_exit(self) -> None:
        os.write(2, f"api.server: shutdown still running {self.deadline_s:g} s after the signal; exiting now\n"
                 .encode())
        os._exit(1)


def build_server(settings: Settings, host: str, port: int, *, log_level: str = "info") -> BoundedShutdownServer:
    """The server; uvicorn's access log is off (the app writes one JSON line per request, see
    :mod:`api.observability`)."""
    fd_limit = raise_fd_limit()
    max_connections, backlog = fit_to_fd_limit(settings.max_connections, fd_limit)
    limits = ConnectionLimits(max_connections=max_connections, header_timeout_s=settings.header_timeout_s,
                              max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
                              shutdown_timeout_s=settings.shutdown_timeout_s)
    options = {**uvicorn_options(settings), "http": limited_protocol(limits), "backlog": backlog}
    config = uvicorn.Config(APP, host=host, port=port, log_level=log_level, access_log=False, **options)
    logging.getLogger("uvicorn.error").addFilter(QuietBadRequests())  # after Config, which sets up logging
    log.info("connections: at most %d open (open-file limit %d, backlog %d), headers %d bytes / %d fields within "
             "%g s, body pauses %g s, keep-alive %g s, shutdown %g s; forwarded headers from %s",
             max_connections, fd_limit, backlog, settings.max_header_bytes, settings.max_headers,
             settings.header_timeout_s, settings.body_timeout_s, settings.keep_alive_timeout_s,
             settings.shutdown_timeout_s, ", ".join(options.get("forwarded_allow_ips", [])) or "nobody")
    return BoundedShutdownServer(config, deadline_s=settings.shutdown_timeout_s + SHUTDOWN_GRACE_S)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--no-access-log", action="store_true",
                        help="no JSON access line per request (logger soundsentry.access)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, access=not args.no_access_log)
    server = build_server(get_settings(), args.host, args.port, log_level=args.log_level)
    server.run()
    # uvicorn re-raises the signal that stopped it (default action: exit); reaching here means it stopped
    # by itself, e.g. a start-up failure it has logged.
    if not server.started:
        raise SystemExit(3)


if __name__ == "__main__":
    main()
