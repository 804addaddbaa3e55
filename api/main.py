"""The FastAPI application: ``uvicorn api.main:app``.

Models load once in ``lifespan``; a load failure leaves the app up with /health answering 503
and the reason, rather than crashing the process.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote 4 sends telemetry by default

import torch  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402

from api.core.config import Settings, get_settings  # noqa: E402
from api.errors import install_error_handlers  # noqa: E402
from api.routes import health, predict  # noqa: E402
from soundsentry.detector import Detector, DetectorConfig  # noqa: E402
from soundsentry.errors import ModelLoadError  # noqa: E402

log = logging.getLogger("api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.detector = None
        app.state.load_error = None
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        try:
            app.state.detector = Detector.load(DetectorConfig(data_dir=settings.data_dir))
            log.info("models loaded: %s", app.state.detector.models)
        except ModelLoadError as error:
            app.state.load_error = error.message
            log.error("models failed to load: %s", error.message)
        yield
        app.state.detector = None

    app = FastAPI(title="Sound Sentry", version="0.1.0", lifespan=lifespan,
                  description="Detects synthetic speech, per speaker and overall.")
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(predict.router)
    return app


app = create_app()
