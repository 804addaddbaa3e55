"""Response schemas: the JSON contract of DESIGN.md, declared so /docs shows it, each with a real
example (:mod:`api.examples`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api import examples

# Every error_code the service answers (docs/SERVICE.md, "Error codes"); tests/test_schema.py checks that
# the code raises no other and names each of these.
ErrorCode = Literal[
    # 4xx: the client can fix it
    "empty_file", "invalid_input", "invalid_request", "too_many_files", "unauthorized", "not_found",
    "method_not_allowed", "session_not_found", "body_timeout", "file_too_large", "audio_too_long",
    "unsupported_format", "no_audio_stream", "unsupported_codec", "undecodable_audio", "decode_timeout",
    "headers_too_large", "rate_limited", "http_error",
    # 5xx: the server's fault or shortage
    "server_busy", "processing_timeout", "model_not_loaded", "model_load_failed", "decoder_unavailable",
    "storage_unavailable", "session_store_unavailable", "insufficient_memory", "resources_exhausted",
    "service_unavailable", "internal_error",
]


def example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


class ErrorResponse(BaseModel):
    model_config = example(examples.ERROR)

    error_code: ErrorCode = Field(description="what went wrong, one of a fixed list (docs/SERVICE.md)")
    message: str
    request_id: str = Field(description="this request's id, also in the X-Request-ID response header and the "
                                        "access log line: the client's X-Request-ID when sane (1-64 characters "
                                        "of A-Z a-z 0-9 . _ : -), else generated")


class SegmentOut(BaseModel):
    speaker: str
    time: str = Field(description='"start-end" in seconds, e.g. "0.3-1.4s"')
    start: float
    end: float
    result: Literal["Real", "Fake"]
    probability: float = Field(description="P(fake), fused")
    scores: dict[str, float] = Field(description="P(fake) per scorer")


ZONE_HELP = ("fake: called Fake; uncertain: called Real but leaning fake (above the calibration's equal-error "
             "point, where real speech of unfamiliar sources also lands); real: below it")


class SpeakerOut(BaseModel):
    speaker: str
    speech_duration: float
    probability: float
    result: Literal["Real", "Fake"]
    category: str
    threshold: float
    segments: int
    counted: bool = Field(description="had enough speech to take part in the overall verdict")
    zone: Literal["real", "uncertain", "fake"] = Field(description=ZONE_HELP)
    own_probability: float = Field(description="P(fake) of this speaker's segments alone; with two or more counted "
                                               "speakers, probability and result judge it against the others "
                                               "of the recording (the contrast roll-up, data/rollup.json)")


class DurationConfig(BaseModel):
    use_diarization: bool
    category: Literal["very_short", "short", "normal"]
    duration: float = Field(description="decoded audio, seconds")
    speech_duration: float
    threshold: float


class AudioOut(BaseModel):
    band_edge_hz: int = Field(description="highest frequency the scored speech carries (within 50 dB of its peak)")
    band_limited: bool = Field(description="under 6 kHz: the upper-band scorers had nothing to read, the verdict "
                                           "is unreliable (see message)")


class PredictResponse(BaseModel):
    model_config = example(examples.PREDICT)

    overall: Literal["Real", "Fake", "No Speech"]
    zone: Literal["real", "uncertain", "fake"] | None = Field(None, description=ZONE_HELP + "; absent with no speech")
    mean_probability: float = Field(description="P(fake), duration-weighted over segments")
    confidence: float
    details: list[SegmentOut]
    speakers: list[SpeakerOut]
    duration_config: DurationConfig
    timings_ms: dict[str, float]
    models: dict[str, str]
    processing_time_ms: float
    audio: AudioOut | None = Field(None, description="absent when no speech was found")
    message: str | None = None
    filename: str | None = None
    rttm: str | None = Field(None, description="the speaker turns in RTTM, when the request asked (rttm=true)")


class BatchItem(BaseModel):
    filename: str
    status: Literal["success", "error"]
    result: PredictResponse | None = None
    error_code: ErrorCode | None = None
    message: str | None = None


class BatchResponse(BaseModel):
    model_config = example(examples.BATCH)

    total_files: int
    successful: int
    failed: int
    results: list[BatchItem]
    processing_time_ms: float


class HealthResponse(BaseModel):
    model_config = example(examples.HEALTH)

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok; degraded (works with less, see detail); unavailable (503: cannot analyse)"
    )
    models_loaded: bool
    detail: str | None = None
    backends: dict[str, str] = {}
    decoders: list[str] = []


class SessionCreated(BaseModel):
    model_config = example(examples.SESSION_CREATED)

    session_id: str = Field(description="send the stream's chunks to POST /sessions/{session_id}/chunks")
    expires_in_s: int = Field(description="the session is forgotten this long after its last chunk")


class SessionSpeakerOut(SpeakerOut):
    confidence: float = Field(description="how sure the rolling verdict is, 0 at the threshold towards 1: it grows "
                                          "with the margin to the threshold and with the chunks heard, and falls "
                                          "when the chunks disagree")
    chunks: int = Field(description="chunks this speaker was heard in")


class SessionOut(BaseModel):
    model_config = example(examples.SESSION)

    session_id: str
    chunks: int = Field(description="chunks received so far")
    speech_duration: float = Field(description="speech scored over all chunks, seconds")
    overall: Literal["Real", "Fake", "No Speech"] = Field(description="the stream's verdict over every chunk so far")
    zone: Literal["real", "uncertain", "fake"] | None = Field(None, description=ZONE_HELP + "; absent with no speech")
    probability: float = Field(description="P(fake) of the speaker the verdict rests on (the surest fake one, "
                                           "or the least sure real one)")
    mean_probability: float = Field(description="P(fake) over every segment of every chunk, duration-weighted "
                                                "(the stream as one recording, like /predict's)")
    confidence: float
    speakers: list[SessionSpeakerOut] = Field(description="S1, S2, ... linked across chunks by their voices")
    chunk_speakers: dict[str, str] | None = Field(None, description="in a chunk's answer: which session speaker "
                                                                    "each of the chunk's speakers became")
    expires_in_s: int


class ChunkResponse(BaseModel):
    model_config = example(examples.CHUNK)

    session_id: str
    chunk_index: int = Field(description="0 for the stream's first chunk")
    chunk: PredictResponse = Field(description="this chunk alone, as POST /predict answers it")
    session: SessionOut


class RootResponse(BaseModel):
    model_config = example(examples.ROOT)

    service: str
    description: str
    endpoints: dict[str, str] = Field(description="method and path: what it is for")


class Limits(BaseModel):
    max_upload_mb: float
    max_duration_s: float
    max_diarization_s: float
    max_batch_files: int
    rate_limit_per_minute: float | None = Field(None, description="absent or None: no rate limit")


class Capacity(BaseModel):
    running: int = Field(description="detections running now")
    waiting: int = Field(description="requests waiting for a slot")
    max_running: int
    max_waiting: int
    rejected: int = Field(description="503 server_busy answers since start-up")
    abandoned: int = Field(description="detections that overran their time bound")
    torch_threads: int = Field(description="torch threads per detection")


class InfoResponse(BaseModel):
    model_config = example(examples.INFO)

    models: dict[str, str] = Field(description="what is loaded, by part (the same as every report's models)")
    thresholds: dict[Literal["very_short", "short", "normal"], float] = Field(
        description="P(fake) at or above which a speaker is Fake, by its speech's duration category")
    uncertain_from: dict[Literal["very_short", "short", "normal"], float] = Field(
        description="where each category's uncertain zone begins (the calibration's equal-error point)")
    fusion: dict[str, Any] | None = Field(description="the fusion's members, weights, thresholds and how it was "
                                                      "fitted (data/fusion.json); None: one scorer alone")
    rollup: dict[str, Any] | None = Field(description="the contrast roll-up (data/rollup.json); None: each speaker "
                                                      "judged alone")
    members: dict[str, dict[str, Any]] = Field(description="each scorer's definition and training")
    config: dict[str, float] = Field(description="speech and segment lengths the analysis uses, seconds")
    decoders: list[str] = Field(description="audio decoders available (pyav, ffmpeg)")
    formats: list[str] = Field(description="containers accepted")
    limits: Limits
    capacity: Capacity
