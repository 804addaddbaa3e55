"""The FastAPI application: ``uvicorn api.main:app`` (or ``uvicorn --factory api.main:create_app``).

Models load once in ``lifespan``; a load failure leaves the app up with /health answering 503
and the reason, and loading is retried lazily (``SOUNDSENTRY_MODEL_RETRY_S``) until it succeeds.
Everything that bounds the service (keys, rate, capacity, body size) is set up here from
:class:`~api.core.config.Settings`; see docs/SERVICE.md.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.core.config import Settings, get_settings
from api.errors import install_error_handlers
from api.limits import AdmissionGate, TokenBuckets
from api.middleware import AccessMiddleware, BodyLimitMiddleware, BodyTimeoutMiddleware, ShedMiddleware
from api.observability import (
    REQUEST_ID_HEADER,
    ObservabilityMiddleware,
    ServiceMetrics,
    configure_logging,
    logging_configured,
)
from api.pages import install_pages
from api.routes import health, metrics, predict, sessions
from api.runtime import ModelSlot, UploadSpool
from soundsentry.audio import available_decoders, ffmpeg_available
from soundsentry.detector import Detector, DetectorConfig
from soundsentry.sessions import MemorySessionStore, open_store

log = logging.getLogger("api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not logging_configured():  # e.g. plain `uvicorn api.main:app`; python -m api.server sets it up itself
            configure_logging(logging.INFO)
        torch.set_num_threads(settings.effective_torch_threads)
        log.info("capacity: %d concurrent job(s) x %d torch thread(s), %d queued; auth %s; rate limit %s",
                 settings.max_concurrent_jobs, settings.effective_torch_threads, settings.max_queued_jobs,
                 "on" if settings.auth_enabled else "off",
                 f"{settings.rate_limit_per_minute:g}/min" if settings.rate_limit_per_minute else "off")
        decoders = available_decoders()
        if not decoders:
            log.error("no audio decoder: install PyAV (pip install av) or the ffmpeg program (apt-get install ffmpeg); "
                      "every upload will be refused with 503 decoder_unavailable")
        elif not ffmpeg_available():
            log.warning("the ffmpeg program is not on PATH: decoding uses PyAV only, so uploads it cannot "
                        "read are not retried with the program (install ffmpeg)")
        app.state.spool.open()
        app.state.models.load()
        try:
            yield
        finally:
            app.state.models.close()
            app.state.spool.close()
            app.state.sessions.close()

    # docs_url/redoc_url off: FastAPI's pages load Swagger UI and ReDoc from a CDN; api.pages serves them locally
    app = FastAPI(title="Sound Sentry", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Detects synthetic speech, per speaker and overall.")
    app.state.settings = settings
    detector_config = DetectorConfig(data_dir=settings.data_dir, tkan_dir=settings.tkan_dir,
                                     xvector_dir=settings.xvector_dir)
    app.state.models = ModelSlot(lambda: Detector.load(detector_config), retry_s=settings.model_retry_s)
    app.state.spool = UploadSpool(settings.tmp_dir)
    app.state.gate = AdmissionGate(settings.max_concurrent_jobs, settings.max_queued_jobs,
                                   settings.queue_timeout_s, settings.busy_retry_after_s)
    app.state.sessions = open_store(settings.redis_url, settings.session_ttl_s, settings.max_sessions)
    local_sessions = app.state.sessions if isinstance(app.state.sessions, MemorySessionStore) else None
    app.state.metrics = (ServiceMetrics(app.state.gate, app.state.models, local_sessions)
                         if settings.metrics_enabled else None)
    buckets = None
    if settings.rate_limit_per_minute > 0:
        burst = settings.rate_limit_burst or max(1, round(settings.rate_limit_per_minute))
        buckets = TokenBuckets(settings.rate_limit_per_minute, burst)

    # add_middleware wraps what is already there: the last added runs first (outermost).
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_s)
    app.add_middleware(BodyLimitMiddleware, limit_for=settings.max_body_bytes,
                       upload_limit_bytes=settings.max_upload_bytes)
    app.add_middleware(ShedMiddleware, gate=app.state.gate)
    app.add_middleware(AccessMiddleware, key_digests=settings.api_key_digests(), buckets=buckets)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Retry-After", REQUEST_ID_HEADER],
    )
    # outermost: the request id, the metrics and the access line see every answer, CORS refusals included
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    install_pages(app)  # the page at / (for browsers), /static, and /docs and /redoc without a CDN
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(sessions.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    return app


app = create_app()
