"""Errors the library raises, each with a stable ``error_code`` and a message that says what to do.

The classes say whose problem it is: :class:`InputError` (the caller can fix it),
:class:`ServiceUnavailableError` (a resource is short or missing; retrying later may work), the base
class for faults. The API maps them to HTTP statuses (``api/errors.py``); the command-line tools print
the message.
"""

from __future__ import annotations

import errno


class SoundSentryError(Exception):
    """Base class: a fault of the service."""

    error_code = "internal_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class InputError(SoundSentryError):
    """The caller sent something the service cannot use; the message says how to fix it."""

    error_code = "invalid_input"


class EmptyUploadError(InputError):
    error_code = "empty_file"


class UndecodableAudioError(InputError):
    """The bytes are not audio any decoder here can read."""

    error_code = "undecodable_audio"


class UnsupportedFormatError(UndecodableAudioError):
    """The upload is not one of the audio containers or codecs the service decodes (checked before any
    decoder opens it): manifests, playlists, session descriptions, tracker/MIDI files, images, video only."""

    error_code = "unsupported_format"


class SessionNotFoundError(InputError):
    """No such stream session (never created, expired or deleted): start a new one."""

    error_code = "session_not_found"


class UploadTooLargeError(InputError):
    error_code = "file_too_large"


class AudioTooLongError(InputError):
    error_code = "audio_too_long"


class ServiceUnavailableError(SoundSentryError):
    """A resource the service needs is missing or busy; retrying later may work."""

    error_code = "service_unavailable"


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
