"""Service settings, from environment variables prefixed ``SOUNDSENTRY_`` (or a ``.env`` file).

Served through the cached :func:`get_settings` dependency, never a module global.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsentry.audio import DecodeLimits
from soundsentry.detector import DEFAULT_DATA_DIR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_", env_file=".env", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    max_upload_mb: float = Field(50.0, gt=0, description="largest accepted upload, MiB")
    max_duration_s: float = Field(3 * 3600.0, gt=0, description="longest accepted decoded audio, seconds")
    ffmpeg_timeout_s: float = Field(60.0, gt=0)
    max_batch_files: int = Field(10, ge=1, le=100)
    # CORS: browser extensions post from chrome-extension:// and moz-extension:// origins
    cors_origins: list[str] = ["*"]
    cors_origin_regex: str | None = r"^(chrome|moz|safari-web)-extension://.*$"
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_upload_bytes=int(self.max_upload_mb * 1024 * 1024),
            max_duration_s=self.max_duration_s,
            ffmpeg_timeout_s=self.ffmpeg_timeout_s,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
