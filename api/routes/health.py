"""Service status: GET /, /health and /info.

``/`` answers the JSON below to programs and the page for people (api/pages.py) to a browser.

``/health`` is open (no API key, no rate limit) and cheap. It answers 503 while the service cannot
analyse anything (models not loaded, no audio decoder) and 200 otherwise: ``ok``, or ``degraded``
with the reason when it works with less (no ffmpeg program, temp storage not writable).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import DetectorDep, GateDep, SettingsDep
from api.pages import page_response, prefers_html
from api.runtime import ModelSlot, UploadSpool
from api.schemas import HealthResponse, InfoResponse, RootResponse
from soundsentry.audio import DEMUXERS, available_decoders
from soundsentry.report import without_paths

router = APIRouter(tags=["status"])


@router.get("/", response_model=RootResponse,
            responses={200: {"description": "this JSON; the page for people (HTML) when Accept prefers text/html",
                             "content": {"text/html": {"example": "<!doctype html>..."}}}})
def root(request: Request, response: Response):
    if prefers_html(request.headers.get("accept")):
        return page_response()
    response.headers["Vary"] = "Accept"
    return {
        "service": "Sound Sentry",
        "description": "Is this speech real or AI-generated, per speaker and overall?",
        "endpoints": {"POST /predict": "one file", "POST /batch-predict": "up to 10 files",
                      "GET /health": "readiness", "GET /info": "models, thresholds, limits", "GET /docs": "OpenAPI"},
    }


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(request: Request):
    models: ModelSlot = request.app.state.models
    spool: UploadSpool = request.app.state.spool
    detector = models.get()  # retries a failed load when one is due
    decoders = list(available_decoders())
    problems = []
    if detector is None:
        problems.append(without_paths(models.reason))  # the log has the full path; this page is open
    if not decoders:
        problems.append("no audio decoder is installed (install PyAV or the ffmpeg program)")
    if detector is None or problems:
        body = HealthResponse(status="unavailable", models_loaded=detector is not None, detail="; ".join(problems),
                              decoders=decoders)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    degraded = []
    if "ffmpeg" not in decoders:
        degraded.append("the ffmpeg program is missing: uploads that PyAV cannot read are not retried with it")
    storage_problem = spool.check()
    if storage_problem:
        degraded.append(without_paths(f"uploads over 1 MiB will be refused: {storage_problem}"))
    return HealthResponse(status="degraded" if degraded else "ok", models_loaded=True,
                          detail="; ".join(degraded) or None, backends=detector.models, decoders=decoders)


@router.get("/info", response_model=InfoResponse)
def info(detector: DetectorDep, settings: SettingsDep, gate: GateDep) -> dict:
    return {
        **detector.info(),
        "decoders": list(available_decoders()),
        "formats": sorted(DEMUXERS),
        "limits": {
            "max_upload_mb": settings.max_upload_mb,
            "max_duration_s": settings.max_duration_s,
            "max_diarization_s": min(settings.max_duration_s, settings.max_diarization_s),
            "max_batch_files": settings.max_batch_files,
            "rate_limit_per_minute": settings.rate_limit_per_minute or None,
        },
        "capacity": {**gate.stats(), "torch_threads": settings.effective_torch_threads},
    }
