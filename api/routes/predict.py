"""POST /predict and /batch-predict.

Plain ``def`` endpoints: inference is CPU-bound, so FastAPI runs them in its thread pool and the
event loop stays free. Each request holds one slot of the admission gate (``GateDep``) while it
reads its upload and runs the detector, on one of the gate's own worker threads (``gate.run``): at
most ``max_concurrent_jobs`` run, ``max_queued_jobs`` wait, the rest get 503 ``server_busy``. Each
file's analysis is bounded by ``detection_timeout_s`` (503 ``processing_timeout`` past it, the slot
freed). The upload (spooled to an anonymous temp file by Starlette, gone when the request ends) is
read at most ``max_upload_bytes + 1`` bytes, then decoded in memory. Each report (and each failed
file of a batch) is counted in the app's metrics and summarised in the request's access line
(:mod:`api.observability`): verdict, zone, stage timings, never the audio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.core.config import Settings
from api.deps import DetectorDep, GateDep, SettingsDep
from api.limits import AdmissionGate
from api.observability import ServiceMetrics, record_of, report_summary
from api.schemas import BatchItem, BatchResponse, ErrorResponse, PredictResponse
from soundsentry.audio import DecodeLimits
from soundsentry.deadline import Deadline
from soundsentry.detector import Detector
from soundsentry.errors import InputError, ProcessingTimeoutError, UploadTooLargeError

# Multipart parsing limits (Starlette's defaults allow 1000 files and 1000 fields per request).
router = APIRouter(tags=["detection"], form_limits={"max_files": 100, "max_fields": 16})

# A detection past its deadline stops at its next check (between packets or stages); the gate waits
# this much longer before abandoning one that has not.
ABANDON_GRACE_S = 2.0
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


def analyse(detector: Detector, upload: UploadFile, use_diarization: bool, limits: DecodeLimits,
            deadline: Deadline, rttm: bool = False, embed_speakers: bool = False) -> dict:
    """The upload's answer body. ``embed_speakers`` (a session's chunk): the :class:`Report` itself, with
    the speakers' d-vectors, is under ``"report"`` for the caller to take out before answering."""
    start = time.perf_counter()
    report = detector.predict_bytes(read_upload(upload, limits), filename=upload.filename,
                                    use_diarization=use_diarization, limits=limits, deadline=deadline,
                                    embed_speakers=embed_speakers)
    body = {**report.serialize(), "processing_time_ms": round((time.perf_counter() - start) * 1000, 2),
            "filename": upload.filename}
    if rttm:
        body["rttm"] = report.rttm(Path(upload.filename or "upload").stem)
    if embed_speakers:
        body["report"] = report
    return body


def note_reports(request: Request, settings: Settings, bodies: list[dict | BatchItem], batch: bool) -> None:
    """Count the reports (or failed files) in the metrics and put their summary in the access line."""
    metrics: ServiceMetrics | None = request.app.state.metrics
    summaries = []
    for item in bodies:
        if isinstance(item, BatchItem) and item.status == "error":
            if metrics is not None:
                metrics.batch_file_errors.labels(item.error_code or "unknown").inc()
            summaries.append({"error_code": item.error_code}
                             | ({"filename": item.filename} if settings.log_filenames else {}))
            continue
        body = item.result.model_dump() if isinstance(item, BatchItem) else item
        if metrics is not None:
            metrics.observe_report(body)
        summaries.append(report_summary(body, body.get("filename") if settings.log_filenames else None))
    record = record_of(request.scope)
    if record is not None:
        record.details = {"files": summaries} if batch else summaries[0]


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
def predict(
    request: Request,
    detector: DetectorDep,
    settings: SettingsDep,
    gate: GateDep,
    audio: Annotated[UploadFile, File(description="the recording: WAV, MP3, WEBM/Opus, OGG, M4A/AAC, FLAC")],
    use_diarization: Annotated[bool, Form(description="split the speech per speaker first", examples=[True])] = False,
    rttm: Annotated[bool, Form(description="also answer the speaker turns as RTTM (field `rttm`)",
                               examples=[False])] = False,
) -> dict:
    with gate.slot():
        limits = settings.decode_limits(use_diarization)
        body = bounded(gate, settings, partial(analyse, rttm=rttm), detector, audio, use_diarization, limits)
    note_reports(request, settings, [body], batch=False)
    return body


def bounded(gate: AdmissionGate, settings: Settings, function: Callable[..., dict], *args: Any) -> dict:
    """``function(*args, deadline)`` on the gate's workers, within ``settings.detection_timeout_s``: the
    analysis stops itself at the deadline, and the gate stops waiting for it a moment later."""
    bound_s = settings.detection_timeout_s
    deadline = Deadline(bound_s, "analysing the upload")
    return gate.run(function, *args, deadline, timeout_s=bound_s + ABANDON_GRACE_S)


@router.post("/batch-predict", response_model=BatchResponse, responses=ERRORS)
def batch_predict(
    request: Request,
    detector: DetectorDep,
    settings: SettingsDep,
    gate: GateDep,
    files: Annotated[list[UploadFile], File(description="up to 10 recordings")],
    use_diarization: Annotated[bool, Form(description="split each file's speech per speaker first",
                                          examples=[False])] = False,
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
                body = bounded(gate, settings, analyse, detector, upload, use_diarization, limits)
                results.append(BatchItem(filename=name, status="success", result=PredictResponse(**body)))
            except (InputError, ProcessingTimeoutError) as error:  # one bad or slow file does not fail the others
                results.append(BatchItem(filename=name, status="error", error_code=error.error_code,
                                         message=error.message))
    note_reports(request, settings, results, batch=True)
    successful = sum(item.status == "success" for item in results)
    return BatchResponse(total_files=len(files), successful=successful, failed=len(files) - successful,
                         results=results, processing_time_ms=round((time.perf_counter() - start) * 1000, 2))
