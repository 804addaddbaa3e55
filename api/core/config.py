"""Service settings, from environment variables prefixed ``SOUNDSENTRY_`` (or a ``.env`` file).

Served through the cached :func:`get_settings` dependency, never a module global. ``create_app``
takes a ``Settings`` and the routes read that one (``request.app.state.settings``), so tests can
build apps with other limits. Every knob is listed, with its default and its effect, in
``docs/SERVICE.md``.

List settings (``SOUNDSENTRY_API_KEYS``, ``SOUNDSENTRY_CORS_ORIGINS``) take a comma-separated list
or a JSON array.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from soundsentry.audio import DecodeLimits
from soundsentry.detector import DEFAULT_DATA_DIR

MIN_API_KEY_CHARS = 16
KEY_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Room for the multipart boundaries, part headers and the small form fields around the file(s).
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def is_chunk_path(path: str) -> bool:
    """``/sessions/{id}/chunks``: one upload, like /predict."""
    return path.startswith("/sessions/") and path.endswith("/chunks") and path.count("/") == 3


def _split_list(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_", env_file=".env", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    tkan_dir: Path | None = Field(
        None, description="TKAN scaler + classifier from here instead of data_dir (e.g. model/tkan-xvector)"
    )
    xvector_dir: Path | None = Field(
        None, description="pyannote x-vector checkpoint for TKAN artefacts that read it; None = model/embedding"
    )
    # --- what one request may send -------------------------------------------------------------
    max_upload_mb: float = Field(50.0, gt=0, description="largest accepted upload, MiB")
    max_duration_s: float = Field(
        1800.0, gt=0, description="longest accepted decoded audio, seconds (memory: about 4 MB per minute kept)"
    )
    max_diarization_s: float = Field(
        1800.0, gt=0, description="longest audio accepted with use_diarization=true (clustering grows as n^2)"
    )
    decode_timeout_s: float = Field(30.0, gt=0, description="wall-clock bound on decoding one upload (either decoder)")
    detection_timeout_s: float = Field(
        180.0, gt=0, description="wall-clock bound on one upload's decode + analysis; the slot is freed past it"
    )
    max_batch_files: int = Field(10, ge=1, le=100)
    # --- capacity: how much work runs at once, how much may wait ---------------------------------
    max_concurrent_jobs: int = Field(2, ge=1, description="detections running at once; match the CPU cores")
    max_queued_jobs: int = Field(16, ge=0, description="requests waiting for a slot; beyond: 503 server_busy")
    queue_timeout_s: float = Field(30.0, gt=0, description="longest wait for a slot before 503 server_busy")
    busy_retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 server_busy")
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads per job; 0 = auto: CPU cores // max_concurrent_jobs (>= 1)"
    )
    # --- who may call ------------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted X-API-Key values; empty (and no file) = no auth"
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line ('#' comments)")
    rate_limit_per_minute: float = Field(0.0, ge=0, description="requests per minute per client; 0 = off")
    rate_limit_burst: int = Field(0, ge=0, description="bucket size; 0 = max(1, rate_limit_per_minute)")
    # CORS: browser extensions post from chrome-extension:// and moz-extension:// origins
    cors_origins: Annotated[list[str], NoDecode] = ["*"]
    cors_origin_regex: str | None = r"^(chrome|moz|safari-web)-extension://.*$"
    # --- where uploads are spooled, and recovery ---------------------------------------------------
    tmp_dir: Path | None = Field(
        None, description="uploads over 1 MiB spool under a private (0700) directory made here; None = system temp"
    )
    model_retry_s: float = Field(30.0, ge=0, description="after a failed model load, retry at most this often")
    # --- connections (enforced by the server launcher, api/server.py) ------------------------------
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For/-Proto are honoured; empty = none (the peer is the client)",
    )
    max_connections: int = Field(1000, ge=1, description="open connections; past it the oldest idle one is closed")
    header_timeout_s: float = Field(10.0, gt=0, description="a new connection must send its full headers within this")
    body_timeout_s: float = Field(30.0, gt=0, description="longest pause between two pieces of a request body")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    max_header_bytes: int = Field(64 * 1024, ge=4096, description="largest request line + headers, bytes")
    max_headers: int = Field(100, ge=8, description="most header fields in one request")
    shutdown_timeout_s: float = Field(5.0, gt=0, description="on SIGTERM, requests in flight get this long to finish")
    # --- streams of chunks (POST /sessions, soundsentry/sessions.py) -------------------------------
    session_ttl_s: float = Field(900.0, gt=0, description="a session expires this long after its last chunk")
    max_sessions: int = Field(10_000, ge=1, description="sessions kept in memory; past it the least recently "
                                                        "used is dropped (in-process store only)")
    session_max_speakers: int = Field(8, ge=1, le=64, description="speakers one session keeps apart")
    redis_url: str | None = Field(None, description="keep sessions in Redis (redis://host:port/db) so that several "
                                                    "replicas share them; None = in this process")
    # --- what operators see (api/observability.py) ----------------------------------------------
    metrics_enabled: bool = Field(True, description="serve Prometheus metrics at GET /metrics (open, like /health)")
    log_filenames: bool = Field(
        False, description="put the uploaded file name in the access line; off: names may be personal data"
    )

    @field_validator("cors_origins", "api_keys", "trusted_proxies", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        keys = [key.strip() for key in keys if key.strip()]
        short = [key for key in keys if len(key) < MIN_API_KEY_CHARS]
        if short:
            raise ValueError(f"SOUNDSENTRY_API_KEYS: {len(short)} key(s) shorter than {MIN_API_KEY_CHARS} "
                             f"characters; {KEY_HINT}")
        return keys

    @model_validator(mode="after")
    def _check_keys_file(self) -> Settings:
        if self.api_keys_file is not None:
            self.file_api_keys()  # fail fast: a missing, unreadable, empty or weak file stops start-up
        return self

    def file_api_keys(self) -> list[str]:
        """Keys from ``api_keys_file``: one per line, blank lines and ``#`` comments ignored."""
        if self.api_keys_file is None:
            return []
        path = self.api_keys_file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ValueError(f"SOUNDSENTRY_API_KEYS_FILE={path} cannot be read ({error.strerror}); "
                             "point it at a readable file with one key per line") from error
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ValueError(f"SOUNDSENTRY_API_KEYS_FILE={path} holds no keys; put one key per line ({KEY_HINT})")
        short = [key for key in keys if len(key) < MIN_API_KEY_CHARS]
        if short:
            raise ValueError(f"SOUNDSENTRY_API_KEYS_FILE={path}: {len(short)} key(s) shorter than "
                             f"{MIN_API_KEY_CHARS} characters; {KEY_HINT}")
        return keys

    def api_key_digests(self) -> frozenset[bytes]:
        """SHA-256 digests of every accepted key (compared in constant time; keys are not kept)."""
        return frozenset(hashlib.sha256(key.encode()).digest() for key in [*self.api_keys, *self.file_api_keys()])

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.api_keys_file)

    @property
    def effective_torch_threads(self) -> int:
        """The intra-op thread budget of one job: split the cores between the concurrent jobs."""
        if self.torch_threads:
            return self.torch_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.max_concurrent_jobs)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def max_body_bytes(self, path: str) -> int:
        """Largest request body accepted on ``path`` (checked on Content-Length and while streaming)."""
        if path == "/predict" or is_chunk_path(path):
            return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        if path == "/batch-predict":
            return self.max_upload_bytes * self.max_batch_files + MULTIPART_OVERHEAD_BYTES
        return MULTIPART_OVERHEAD_BYTES

    def decode_limits(self, use_diarization: bool = False) -> DecodeLimits:
        duration = min(self.max_duration_s, self.max_diarization_s) if use_diarization else self.max_duration_s
        return DecodeLimits(
            max_upload_bytes=self.max_upload_bytes,
            max_duration_s=duration,
            decode_timeout_s=self.decode_timeout_s,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
