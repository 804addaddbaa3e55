"""What an operator sees: request ids, one JSON access line per request, and Prometheus metrics.

:class:`ObservabilityMiddleware` (the outermost middleware, see ``api.main``) gives every HTTP request
a :class:`RequestRecord`: its id is the client's ``X-Request-ID`` when that is sane (1-64 characters
of ``A-Z a-z 0-9 . _ : -``), else a fresh ``uuid4().hex``. The id goes back in the ``X-Request-ID``
response header and, through :func:`current_record` (read by ``api.errors.error_response``), into
every error body as ``request_id``. When the answer is sent the middleware counts the request in
:class:`ServiceMetrics` and writes one JSON line to the ``soundsentry.access`` logger: id, method,
route, status, duration, error code, and for ``/predict`` (``/batch-predict``: per file) the verdict,
zone and stage timings. Never the audio; the upload's file name only with ``SOUNDSENTRY_LOG_FILENAMES``.

:class:`ServiceMetrics` owns its :class:`~prometheus_client.CollectorRegistry` (one per app, so apps
built side by side in one process do not clash); ``GET /metrics`` serves it. The admission gate and
the loaded models are read at scrape time, so they cost a request nothing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from api.limits import AdmissionGate
    from api.runtime import ModelSlot

ACCESS_LOGGER = "soundsentry.access"
access_log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
MAX_REQUEST_ID_CHARS = 64
SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}")
STATE_KEY = "soundsentry_request"  # where the record lives in scope["state"]
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# methods get a label of their own; anything else a client may send is "other" (bounded label values)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
MAX_LOGGED_PATH_CHARS = 200

# few buckets: a scrape costs about 6 us per sample line, and each bucket is a line per label set
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


# ----------------------------------------------------------------------------- request ids


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it may serve as a request id (bounded, log- and header-safe characters), else None."""
    if value is not None and SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class RequestRecord:
    """What the access line and the metrics learn about one request while it is served."""

    request_id: str
    error_code: str | None = None
    details: dict[str, Any] | None = None  # verdicts and timings, set by the detection routes


_current: ContextVar[RequestRecord | None] = ContextVar("soundsentry_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being served in this context (None outside a request)."""
    return _current.get()


def record_of(scope: Mapping[str, Any]) -> RequestRecord | None:
    """The record :class:`ObservabilityMiddleware` stored in the request's ``scope["state"]``."""
    state = scope.get("state")
    return state.get(STATE_KEY) if isinstance(state, dict) else None


def _header(scope: Scope, key: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == key:  # ASGI servers lower-case header names
            return value.decode("latin-1")
    return None


# ----------------------------------------------------------------------------- metrics


def _label_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", key)
    return name if name and not name[0].isdigit() and not name.startswith("__") else f"model_{name}"


class _StateCollector:
    """Reads the admission gate, the model slot and the session store at scrape time."""

    def __init__(self, gate: AdmissionGate | None, models: ModelSlot | None, sessions: Any = None) -> None:
        self.gate = gate
        self.models = models
        self.sessions = sessions  # an in-process store only: counting a Redis store's keys is a scan

    def describe(self) -> list:
        return []  # names are fixed below; nothing to check at registration

    def collect(self):
        if self.gate is not None:
            stats = self.gate.stats()
            gauges = (
                ("soundsentry_admission_running", "detections running now", stats["running"]),
                ("soundsentry_admission_queue_depth", "requests waiting for a detection slot", stats["waiting"]),
                ("soundsentry_admission_max_running", "detection slots (SOUNDSENTRY_MAX_CONCURRENT_JOBS)",
                 stats["max_running"]),
                ("soundsentry_admission_max_queued", "queue places (SOUNDSENTRY_MAX_QUEUED_JOBS)",
                 stats["max_waiting"]),
            )
            for name, documentation, value in gauges:
                yield GaugeMetricFamily(name, documentation, value=value)
            yield CounterMetricFamily("soundsentry_admission_rejections",
                                      "requests refused with 503 server_busy (slots and queue full, or queued too "
                                      "long)", value=stats["rejected"])
            yield CounterMetricFamily("soundsentry_admission_abandoned",
                                      "detections that overran their time bound and were left to finish alone",
                                      value=stats["abandoned"])
        if self.sessions is not None:
            yield GaugeMetricFamily("soundsentry_sessions_open", "stream sessions held in this process (expired "
                                    "ones are dropped as sessions are touched)", value=self.sessions.count())
            yield CounterMetricFamily("soundsentry_sessions_evicted", "live sessions dropped to stay under "
                                      "SOUNDSENTRY_MAX_SESSIONS", value=self.sessions.evicted)
        if self.models is not None:
            detector = self.models.detector
            yield GaugeMetricFamily("soundsentry_models_loaded", "1 when the detector is loaded, else 0",
                                    value=1 if detector is not None else 0)
            if detector is not None:
                info = InfoMetricFamily("soundsentry_models", "names and versions of the loaded models "
                                        "(the detector's models, as /health and reports show them)")
                info.add_metric([], {_label_name(k): str(v) for k, v in detector.models.items()})
                yield info


class _WithoutCreated:
    """The registry's metrics without the ``*_created`` samples (one more line per label set, each scrape,
    for a start time Prometheus does not need). prometheus_client can only drop them process-wide
    (``disable_created_metrics``); this drops them for this registry alone."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        for metric in self.registry.collect():
            if metric.type in ("counter", "histogram", "summary", "gaugehistogram"):
                metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric


class ServiceMetrics:
    """The Prometheus metrics of one app, in a registry of its own (never the global default)."""

    def __init__(self, gate: AdmissionGate | None = None, models: ModelSlot | None = None,
                 sessions: Any = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("soundsentry_http_requests", "HTTP requests answered, by method, route and status",
                                ("method", "route", "status"), registry=self.registry)
        # no method label: it would multiply the bucket lines, and each route has one method that matters
        self.latency = Histogram("soundsentry_http_request_duration_seconds",
                                 "time from the request's arrival in the app to the end of its answer, by route "
                                 "and status", ("route", "status"), buckets=HTTP_BUCKETS_S, registry=self.registry)
        self.errors = Counter("soundsentry_http_errors", "error answers, by route, status and error_code "
                              "(every 4xx refusal, decode failures included, and every 5xx)",
                              ("route", "status", "error_code"), registry=self.registry)
        self.stages = Histogram("soundsentry_stage_duration_seconds",
                                "time of each stage of a detection (the report's timings_ms)", ("stage",),
                                buckets=STAGE_BUCKETS_S, registry=self.registry)
        self.verdicts = Counter("soundsentry_verdicts", "reports made, by overall verdict and zone "
                                "(zone 'none' when there is no speech)", ("overall", "zone"), registry=self.registry)
        self.batch_file_errors = Counter("soundsentry_batch_file_errors",
                                         "files of /batch-predict answered with an error, by error_code",
                                         ("error_code",), registry=self.registry)
        self.registry.register(_StateCollector(gate, models, sessions))
        self._exported = _WithoutCreated(self.registry)

    def observe_request(self, method: str, route: str, status: str, seconds: float, error_code: str | None) -> None:
        self.requests.labels(method, route, status).inc()
        self.latency.labels(route, status).observe(seconds)
        if error_code is not None:
            self.errors.labels(route, status, error_code).inc()

    def observe_report(self, body: Mapping[str, Any]) -> None:
        for stage, ms in body.get("timings_ms", {}).items():
            self.stages.labels(stage).observe(ms / 1000.0)
        self.verdicts.labels(body["overall"], body.get("zone") or "none").inc()

    def exposition(self) -> bytes:
        return generate_latest(self._exported)


# ----------------------------------------------------------------------------- the middleware


def report_summary(body: Mapping[str, Any], filename: str | None) -> dict[str, Any]:
    """What the access line says of one report: verdict, zone, audio length, stage timings (no audio)."""
    summary: dict[str, Any] = {"verdict": body["overall"], "zone": body.get("zone")}
    duration = body.get("duration_config") or {}
    if "duration" in duration:
        summary["audio_s"] = round(duration["duration"], 2)
    summary["timings_ms"] = body.get("timings_ms", {})
    if filename is not None:
        summary["filename"] = filename
    return summary


class ObservabilityMiddleware:
    """Request id, metrics and the access line of every HTTP request (pure ASGI, outermost).

    ``metrics`` None: no metrics are kept (``SOUNDSENTRY_METRICS_ENABLED=false``). The access line is
    built only when ``soundsentry.access`` is enabled for INFO."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None) -> None:
        self.app = app
        self.metrics = metrics
        self._paths: frozenset[str] | None = None

    def _route(self, scope: Scope) -> str:
        """The route's path template (bounded label values): the matched route, else the path when it is
        one of the app's routes (a request refused by a middleware before routing), else ``unmatched``."""
        path = getattr(scope.get("route"), "path", None)
        if path is not None:
            return path
        if self._paths is None:
            app = scope.get("app")
            self._paths = frozenset(getattr(r, "path", "") for r in getattr(app, "routes", ()))
        return scope["path"] if scope["path"] in self._paths else UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = sane_request_id(_header(scope, _REQUEST_ID_KEY)) or new_request_id()
        record = RequestRecord(request_id)
        scope.setdefault("state", {})[STATE_KEY] = record
        id_header = (_REQUEST_ID_KEY, request_id.encode("latin-1"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _REQUEST_ID_KEY for name, _ in headers):
                    headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        token = _current.set(record)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:  # Starlette's outermost handler answers 500 internal_error (api.errors)
                status = 500
                record.error_code = record.error_code or "internal_error"
            raise
        finally:
            _current.reset(token)
            self._finish(scope, record, status, time.perf_counter() - start)

    def _finish(self, scope: Scope, record: RequestRecord, status: int | None, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = self._route(scope)
        status_label = str(status) if status is not None else "none"  # none: the client left, or shutdown
        if self.metrics is not None:
            self.metrics.observe_request(method, route, status_label, seconds, record.error_code)
        if not access_log.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "request_id": record.request_id, "method": method, "route": route,
        }
        if route == UNMATCHED_ROUTE:
            line["path"] = scope["path"][:MAX_LOGGED_PATH_CHARS]
        client = scope.get("client")
        line |= {"status": status, "duration_ms": round(seconds * 1000, 2),
                 "client": str(client[0]) if client else None}
        if record.error_code is not None:
            line["error_code"] = record.error_code
        if record.details:
            line |= record.details
        access_log.info(json.dumps(line, separators=(",", ":"), ensure_ascii=True, default=str))


# ----------------------------------------------------------------------------- logging set-up


class _Marked(logging.StreamHandler):
    """A handler this module installed (so a second set-up does not add another)."""


def configure_logging(level: int | str = logging.INFO, *, access: bool = True) -> None:
    """Log the application's records (``api``, ``soundsentry``, ...) at ``level`` to stderr, and the access
    lines, bare JSON, to stdout (on unless ``access`` is False or ``level`` is above INFO). Idempotent."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    root = logging.getLogger()
    if not any(isinstance(handler, _Marked) for handler in root.handlers):
        handler = _Marked(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    if not any(isinstance(handler, _Marked) for handler in access_log.handlers):
        handler = _Marked(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
    access_log.propagate = False  # one line, bare JSON, not also through the root's format
    access_log.setLevel(max(level, logging.INFO) if access else logging.WARNING)


def logging_configured() -> bool:
    return bool(logging.getLogger().handlers)
