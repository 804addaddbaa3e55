"""POST /predict and /batch-predict.

Plain ``def`` endpoints: inference is CPU-bound, so FastAPI runs them in its thread pool and the
event loop stays free. Each request holds one slot of the admission gate (``GateDep``) while it
reads its upload and runs the detector, on one of the gate's own worker threads (``gate.run``): at
most ``max_concurrent_jobs`` run, ``max_queued_jobs`` wait, the rest get 503 ``server_busy``. The
upload (spooled to a private temp file by Starlette, removed when the request ends) is read at most
``max_upload_bytes + 1`` bytes, then decoded in memory.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from api.deps import DetectorDep, GateDep, SettingsDep
from api.schemas import BatchItem, BatchResponse, ErrorResponse, PredictResponse
from soundsentry.audio import DecodeLimits
from soundsentry.detector import Detector
from soundsentry.errors import InputError, UploadTooLargeError

# Multipart parsing limits (Starlette's defaults allow 1000 files and 1000 fields per request).
router = APIRouter(tags=["detection"], form_limits={"max_files": 100, "max_fields": 16})

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422, 429, 503)
}


def read_upload(upload: UploadFile, limits: DecodeLimits) -> bytes:
    data = upload.file.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise UploadTooLargeError(
            f"The upload is larger than {limits.max_upload_bytes / 2**20:g} MiB; send a shorter "
            "recording or split it into parts."
        )
    return data


def analyse(detector: Detector, upload: UploadFile, use_diarization: bool, limits: DecodeLimits) -> dict:
    start = time.perf_counter()
    report = detector.predict_bytes(read_upload(upload, limits), filename=upload.filename,
                                    use_diarization=use_diarization, limits=limits)
    return {**report.serialize(), "processing_time_ms": round((time.perf_counter() - start) * 1000, 2),
            "filename": upload.filename}


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
def predict(
    detector: DetectorDep,
    settings: SettingsDep,
    gate: GateDep,
    audio: Annotated[UploadFile, File(description="the recording: WAV, MP3, WEBM/Opus, OGG, M4A/AAC, FLAC")],
    use_diarization: Annotated[bool, Form(description="split the speech per speaker first")] = False,
) -> dict:
    with gate.slot():
        return gate.run(analyse, detector, audio, use_diarization, settings.decode_limits(use_diarization))


@router.post("/batch-predict", response_model=BatchResponse, responses=ERRORS)
def batch_predict(
    detector: DetectorDep,
    settings: SettingsDep,
    gate: GateDep,
    files: Annotated[list[UploadFile], File(description="up to 10 recordings")],
    use_diarization: Annotated[bool, Form()] = False,
) -> BatchResponse:
    if len(files) > settings.max_batch_files:
        raise InputError(f"{len(files)} files sent; at most {settings.max_batch_files} per batch. "
                         "Split them over several requests.", error_code="too_many_files")
    limits = settings.decode_limits(use_diarization)
    start = time.perf_counter()
    results = []
    with gate.slot():  # one slot for the whole batch: its files are analysed one after another
        for upload in files:
            name = upload.filename or "unnamed"
            try:
                body = gate.run(analyse, detector, upload, use_diarization, limits)
                results.append(BatchItem(filename=name, status="success", result=PredictResponse(**body)))
            except InputError as error:  # one bad file does not fail the others
                results.append(BatchItem(filename=name, status="error", error_code=error.error_code,
                                         message=error.message))
    successful = sum(item.status == "success" for item in results)
    return BatchResponse(total_files=len(files), successful=successful, failed=len(files) - successful,
                         results=results, processing_time_ms=round((time.perf_counter() - start) * 1000, 2))
