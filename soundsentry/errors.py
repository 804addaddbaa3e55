"""Errors the library raises, each with a stable ``error_code`` and the HTTP status it maps to.

The API turns any :class:`SoundSentryError` into ``{"error_code": ..., "message": ...}`` with
``status_code``; the command-line tools print the message. Messages say what to do about the problem.
"""

from __future__ import annotations

import errno


class SoundSentryError(Exception):
    """Base class. ``status_code`` < 500 means the client can fix it; >= 500 is our fault."""

    error_code = "internal_error"
    status_code = 500

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class InputError(SoundSentryError):
    """The client sent something we cannot use (HTTP 4xx)."""

    error_code = "invalid_input"
    status_code = 400


class EmptyUploadError(InputError):
    error_code = "empty_file"
    status_code = 400


class UndecodableAudioError(InputError):
    """The bytes are not audio any decoder here can read."""

    error_code = "undecodable_audio"
    status_code = 415


class UnsupportedFormatError(UndecodableAudioError):
    """The upload is not one of the audio containers or codecs the service decodes (checked before any
    decoder opens it): manifests, playlists, session descriptions, tracker/MIDI files, images, video only."""

    error_code = "unsupported_format"
    status_code = 415


class UploadTooLargeError(InputError):
    error_code = "file_too_large"
    status_code = 413


class AudioTooLongError(InputError):
    error_code = "audio_too_long"
    status_code = 413


class ServiceUnavailableError(SoundSentryError):
    """A resource the service needs is missing or busy (HTTP 503); retrying later may work."""

    error_code = "service_unavailable"
    status_code = 503


class DecoderUnavailableError(ServiceUnavailableError):
    error_code = "decoder_unavailable"


class StorageUnavailableError(ServiceUnavailableError):
    """The server cannot write a temporary file it needs (disk full, temp directory not writable)."""

    error_code = "storage_unavailable"


class ProcessingTimeoutError(ServiceUnavailableError):
    """One upload's analysis ran past its wall-clock bound and was stopped (its slot is freed)."""

    error_code = "processing_timeout"


class ResourcesExhaustedError(ServiceUnavailableError):
    """The server is out of file descriptors, processes or memory for this request; retrying later may work."""

    error_code = "resources_exhausted"


def resource_error(exc: OSError, doing: str) -> ServiceUnavailableError:
    """The 503 for an ``OSError`` that means the server ran short (descriptors, disk, memory) while ``doing``.

    Disk full or not writable is ``storage_unavailable``; out of descriptors, processes or memory is
    ``resources_exhausted``. Any other ``OSError`` is a server fault too, reported the same way.
    """
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOENT):
        return StorageUnavailableError(
            f"The server could not {doing} ({reason}): its temporary storage is full or not writable. "
            "This is a server fault and has been logged; retry later."
        )
    return ResourcesExhaustedError(
        f"The server could not {doing} ({reason}): it is short of file descriptors, processes or memory. "
        "This is a server fault and has been logged; retry later."
    )


class ModelLoadError(SoundSentryError):
    """A shipped or user-provided model artefact is missing, corrupt or mismatched."""

    error_code = "model_load_failed"
    status_code = 503
