"""Service status: GET /, /health and /info."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import DetectorDep, SettingsDep
from api.schemas import HealthResponse
from soundsentry.audio import available_decoders

router = APIRouter(tags=["status"])


@router.get("/")
def root() -> dict:
    return {
        "service": "Sound Sentry",
        "description": "Is this speech real or AI-generated, per speaker and overall?",
        "endpoints": {"POST /predict": "one file", "POST /batch-predict": "up to 10 files",
                      "GET /health": "readiness", "GET /info": "models, thresholds, limits", "GET /docs": "OpenAPI"},
    }


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(request: Request):
    detector = getattr(request.app.state, "detector", None)
    if detector is None:
        body = HealthResponse(status="unavailable", models_loaded=False,
                              detail=getattr(request.app.state, "load_error", None) or "models loading")
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    return HealthResponse(status="ok", models_loaded=True, backends=detector.models)


@router.get("/info")
def info(detector: DetectorDep, settings: SettingsDep) -> dict:
    return {
        **detector.info(),
        "decoders": list(available_decoders()),
        "formats": ["wav", "flac", "mp3", "webm/opus", "ogg/vorbis", "ogg/opus", "m4a/aac", "aac (adts)"],
        "limits": {
            "max_upload_mb": settings.max_upload_mb,
            "max_duration_s": settings.max_duration_s,
            "max_batch_files": settings.max_batch_files,
        },
    }
