"""Decode uploads into 16 kHz mono float32 waveforms (and encode audio for tests and augmentation).

An upload reaches nothing but itself. Its container is named from its bytes (:func:`sniff_format`)
and must be one of :data:`DEMUXERS`; anything else (a DASH or HLS manifest, an ffconcat list, an SDP
session, a playlist, a tracker module, an image) is refused with 415 before any decoder opens it. Each
decoder is then *told* which demuxer to use (libav never probes), may open no protocol beyond the
bytes it was handed, no other demuxer, and no decoder outside the codec allow-list (:func:`codec_allowed`).

Decoding runs in process with PyAV (libav) first, because spawning the ``ffmpeg`` program costs
about ten times more for a short chunk; damaged packets are skipped. The program, given the upload
as an anonymous in-memory file, is the fallback when PyAV reads nothing, and is asked again when
PyAV returns clearly less audio than the stream states. Both stream: the first audio stream only,
channels averaged and resampled to :data:`SAMPLE_RATE` as frames arrive, into one array that stops
at ``DecodeLimits.max_duration_s`` whatever the header says, within ``DecodeLimits.decode_timeout_s``
of wall-clock time. NaN/Inf become 0 and samples are clipped to [-1, 1].

Usage
-----
>>> waveform = decode_audio(upload_bytes, filename="clip.webm")
>>> waveform.samples.shape, waveform.sample_rate  # ((time,), 16000)
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundsentry.constants import SAMPLE_RATE
from soundsentry.deadline import Deadline
from soundsentry.errors import (
    AudioTooLongError,
    DecoderUnavailableError,
    EmptyUploadError,
    UndecodableAudioError,
    UnsupportedFormatError,
    UploadTooLargeError,
    resource_error,
)

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS_HINT = "Upload a WAV, MP3, WEBM/Opus, OGG, M4A/AAC or FLAC file."

# Decode this much past the duration limit, so that "longer than the limit" is observed, not guessed.
_DECODE_MARGIN_S = 1.0
_SANITISE_BLOCK = 1 << 20  # samples
_RESAMPLE_BLOCK = 1 << 16  # source samples gathered before each call of the resampler
_SAMPLE_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32,
                  "dbl": np.float64}
_SHORT_FRACTION = 0.9  # PyAV returning less than this share of the stated duration asks the program too
_MAX_DAMAGED_PACKETS = 1000
_MIN_RATE, _MAX_RATE, _MAX_CHANNELS = 1000, 768_000, 64

# The containers the service decodes, by :func:`sniff_format`'s name, and the libav demuxer forced
# for each. Nothing else is opened: libav never probes an upload, so the demuxers that fetch or read
# other resources (dash, hls, concat, sdp, rtp, image2, tee, ...) are unreachable.
DEMUXERS: dict[str, str] = {
    "wav": "wav", "aiff": "aiff", "flac": "flac", "mp3": "mp3", "ogg": "ogg", "opus": "ogg",
    "webm": "matroska", "matroska": "matroska", "m4a": "mov", "mp4": "mov", "aac": "aac",
}
# Codecs decoded (libav names), besides every PCM and ADPCM variant.
_CODECS = frozenset({"mp1", "mp2", "mp3", "aac", "alac", "flac", "opus", "vorbis"})
_CODEC_PREFIXES = ("pcm_", "adpcm_")
# Containers whose stated duration is only an estimate from the bitrate: not refused on it.
_ESTIMATED = frozenset({"mp3", "aac"})
# Text that names media elsewhere: manifests, playlists, concat lists, session descriptions, URLs.
_REFERENCE_MARKERS = (b"#extm3u", b"#extinf", b"ffconcat", b"file ", b"<?xml", b"<mpd", b"<smil", b"<asx",
                      b"[playlist]", b"[reference]", b"v=0", b"concat:", b"subfile,", b"data:", b"file:",
                      b"http:", b"https:", b"rtp:", b"rtsp:", b"udp:", b"tcp:", b"ftp:", b"tee:", b"crypto:")
_OTHER_MAGIC = (
    (b"MThd", 0, "a MIDI file (notes, not a recording)"),
    (b"Extended Module:", 0, "a tracker module (synthesised music, not a recording)"),
    (b"SCRM", 44, "a tracker module (synthesised music, not a recording)"),
    (b"IMPM", 0, "a tracker module (synthesised music, not a recording)"),
    (b"\x89PNG", 0, "an image (PNG)"),
    (b"\xff\xd8\xff", 0, "an image (JPEG)"),
    (b"GIF8", 0, "an image (GIF)"),
    (b"BM", 0, "an image (BMP)"),
    (b"WEBP", 8, "an image (WEBP)"),
    (b"II*\x00", 0, "an image (TIFF)"),
    (b"MM\x00*", 0, "an image (TIFF)"),
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"\x7fELF", 0, "a program"),
)
_MOD_TAGS = frozenset({b"M.K.", b"M!K!", b"FLT4", b"FLT8", b"4CHN", b"6CHN", b"8CHN", b"CD81", b"OKTA"})
_ENCODE_TIMEOUT_S = 120.0
# fmt -> (codec and muxer arguments, needs a seekable output)
_ENCODE_ARGS: dict[str, tuple[tuple[str, ...], bool]] = {
    "flac": (("-c:a", "flac", "-f", "flac"), False),
    "mp3": (("-c:a", "libmp3lame", "-f", "mp3"), False),
    "webm": (("-c:a", "libopus", "-f", "webm"), False),
    "ogg": (("-c:a", "libvorbis", "-f", "ogg"), False),
    "opus": (("-c:a", "libopus", "-f", "ogg"), False),
    "m4a": (("-c:a", "aac", "-f", "ipod"), True),
    "aac": (("-c:a", "aac", "-f", "adts"), False),
}
ENCODE_FORMATS = ("wav", *_ENCODE_ARGS)


@dataclass(frozen=True)
class DecodeLimits:
    """Limits enforced while decoding one upload.

    Parameters
    ----------
    max_upload_bytes
        Largest encoded input accepted; checked before any decoding.
    max_duration_s
        Longest decoded audio accepted, in seconds; decoding stops just past it, whatever the header says.
    decode_timeout_s
        Wall-clock bound on decoding one upload, both decoders together; past it the decode stops
        (the ffmpeg program is killed) with 415 ``decode_timeout``.
    """

    max_upload_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 1800.0
    decode_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes <= 0 or self.max_duration_s <= 0 or self.decode_timeout_s <= 0:
            raise ValueError(f"DecodeLimits must all be positive, got {self}")


@dataclass(frozen=True, eq=False)
class Waveform:
    """Decoded audio: mono, :data:`SAMPLE_RATE`, float32 in [-1, 1].

    Parameters
    ----------
    samples
        (time,) float32 samples.
    sample_rate
        Always :data:`SAMPLE_RATE`; resample before building a ``Waveform``.
    source_format
        The container/codec the audio came from, as :func:`sniff_format` names it.
    """

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    source_format: str = "raw"

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray) or self.samples.ndim != 1:
            shape = getattr(self.samples, "shape", type(self.samples).__name__)
            raise ValueError(f"Waveform samples must be a 1-D (time,) numpy array, got {shape}")
        if self.samples.dtype != np.float32:
            raise ValueError(f"Waveform samples must be float32, got {self.samples.dtype}; use .astype(np.float32)")
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"Waveform sample_rate must be {SAMPLE_RATE} Hz, got {self.sample_rate}; resample first")

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.samples.shape[0] / self.sample_rate

    def as_pyannote(self) -> dict[str, Any]:
        """Return pyannote's in-memory input ``{"waveform": (channel=1, time) tensor, "sample_rate"}``.

        The tensor shares memory with :attr:`samples`.
        """
        return {"waveform": torch.from_numpy(self.samples).unsqueeze(0), "sample_rate": self.sample_rate}

    def crop(self, start_s: float, end_s: float) -> Waveform:
        """Return the audio in [start_s, end_s) seconds (a view, clamped to the duration).

        Raises
        ------
        ValueError
            Unless ``0 <= start_s <= end_s``.
        """
        if not 0.0 <= start_s <= end_s:
            raise ValueError(f"crop needs 0 <= start_s <= end_s, got start_s={start_s}, end_s={end_s}")
        num_samples = self.samples.shape[0]
        start = min(round(start_s * self.sample_rate), num_samples)
        end = min(round(end_s * self.sample_rate), num_samples)
        return Waveform(self.samples[start:end], self.sample_rate, self.source_format)


def sniff_format(data: bytes) -> str | None:
    """Name the container from its magic bytes, ignoring any file name.

    Returns
    -------
    str or None
        One of ``wav``, ``aiff``, ``flac``, ``mp3``, ``ogg`` (Vorbis or other), ``opus`` (Ogg/Opus),
        ``webm``, ``matroska``, ``m4a``, ``mp4``, ``aac`` (ADTS/ADIF); None when unrecognised.
    """
    head = bytes(memoryview(data)[:_SNIFF_BYTES])
    if head[:3] == b"ID3" and len(head) >= 10:
        # ID3v2 tag: 28-bit "syncsafe" size, plus a 10-byte footer when flag 0x10 is set.
        tag_bytes = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
        tag_bytes += 10 if head[5] & 0x10 else 0
        inner = _sniff_head(bytes(memoryview(data)[tag_bytes : tag_bytes + _SNIFF_BYTES]))
        return inner if inner in ("flac", "aac") else "mp3"
    found = _sniff_head(head)
    if found is None and not _known_other(head) and _find_mpeg_chain(data) >= 0:
        return "mp3"  # MPEG audio after some junk (padding, a broken tag): five frames in a row say so
    return found


def _known_other(head: bytes) -> bool:
    """Whether ``head`` starts like a known file that is not audio (image, document, program ...)."""
    return any(head[offset : offset + len(magic)] == magic for magic, offset, _ in _OTHER_MAGIC)


_MPEG_KBPS = {  # (MPEG-1?, layer) -> bitrate per index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MPEG_SCAN_BYTES = 64 * 1024
_SNIFF_BYTES = 8192  # room for three MPEG or ADTS frames


def _mpeg_frame_length(data: bytes, at: int) -> int:
    """Length in bytes of the MPEG audio frame whose header starts at ``at``; 0 when none does."""
    if at + 4 > len(data) or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return 0
    version, layer = (data[at + 1] >> 3) & 3, 4 - ((data[at + 1] >> 1) & 3)
    bitrate_index, rate_index, padding = data[at + 2] >> 4, (data[at + 2] >> 2) & 3, (data[at + 2] >> 1) & 1
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return 0
    kbps = _MPEG_KBPS[(version == 3, layer)][bitrate_index - 1]
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        return (12 * kbps * 1000 // rate + padding) * 4
    per_kbps = 72 if layer == 3 and version != 3 else 144
    return per_kbps * kbps * 1000 // rate + padding


def _adts_frame_length(data: bytes, at: int) -> int:
    """Length in bytes of the ADTS (AAC) frame whose header starts at ``at``; 0 when none does."""
    if at + 7 > len(data) or data[at] != 0xFF or data[at + 1] & 0xF6 != 0xF0 or (data[at + 2] >> 2) & 0xF > 12:
        return 0
    length = ((data[at + 3] & 3) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
    return length if length >= 7 else 0


def _frames_chain(
    data: bytes, at: int, frame_length: Callable[[bytes, int], int], count: int = 3, short_file: bool = True
) -> bool:
    """Whether ``count`` frames follow one another from ``at`` (or, with ``short_file``, valid frames run
    to the end of ``data``, for a file of fewer frames): one header that merely looks right is chance,
    a chain is not."""
    for _ in range(count):
        if short_file and at == len(data) and at > 0:
            return True
        length = frame_length(data, at)
        if length == 0:
            return False
        at += length
    return True


def _find_mpeg_chain(data: bytes) -> int:
    """Offset of the first MPEG frame header in the first 64 KiB that four more frames follow; -1 if none."""
    head = bytes(memoryview(data)[: _MPEG_SCAN_BYTES + 8192])
    at = head.find(b"\xff")
    while 0 <= at < _MPEG_SCAN_BYTES:
        if _frames_chain(head, at, _mpeg_frame_length, count=5, short_file=False):
            return at
        at = head.find(b"\xff", at + 1)
    return -1


def _sniff_head(head: bytes) -> str | None:
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS" and len(head) > 27:
        payload = head[27 + head[26] :]  # after the page header and its segment table
        return "opus" if payload.startswith(b"OpusHead") else "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML; the DocType says webm or matroska
        return "webm" if b"webm" in head[:64] else "matroska"
    if head[4:8] == b"ftyp":
        return "m4a" if head[8:12] in (b"M4A ", b"M4B ", b"M4P ") else "mp4"
    if head[:4] == b"ADIF" or _frames_chain(head, 0, _adts_frame_length):
        return "aac"  # ADTS: 12-bit sync, layer 00, frames that follow one another
    if _frames_chain(head, 0, _mpeg_frame_length):
        return "mp3"
    return None


def ffmpeg_available() -> bool:
    """True when the ``ffmpeg`` program is on PATH (the fallback decoder; :func:`encode_audio` needs it)."""
    return shutil.which("ffmpeg") is not None


def available_decoders() -> tuple[str, ...]:
    """Names of the decoders usable here, in the order they are tried: ``pyav``, ``ffmpeg``."""
    found = ("pyav",) if _pyav() is not None else ()
    return found + (("ffmpeg",) if ffmpeg_available() else ())


@functools.lru_cache(maxsize=1)
def _pyav() -> Any | None:
    """The ``av`` module (PyAV, libav in process), or None when it cannot be imported."""
    try:
        import av
    except (ImportError, OSError) as exc:
        logger.warning("PyAV is unusable (%s); decoding falls back to the ffmpeg program", exc)
        return None
    return av


def codec_allowed(codec: str) -> bool:
    """Whether the service decodes audio coded with ``codec`` (libav's codec name, e.g. ``pcm_s16le``)."""
    return codec in _CODECS or codec.startswith(_CODEC_PREFIXES)


@functools.lru_cache(maxsize=1)
def _decoder_whitelist() -> str:
    """The ffmpeg program's ``-codec_whitelist``: every decoder name of an allowed codec (PyAV lists them)."""
    names = {"mp3float", "mp2float", "mp1float", "aac_fixed", "libopus", "libvorbis", *_CODECS}
    av = _pyav()
    if av is not None:  # decoders are named apart from their codec at times ("g722" decodes adpcm_g722)
        for name in av.codecs_available:
            with contextlib.suppress(av.FFmpegError, ValueError):
                decoder = av.Codec(name, "r")
                if codec_allowed(decoder.canonical_name):
                    names.add(decoder.name)
    else:  # the common ones, enough for the fallback alone
        names.update(f"pcm_{kind}" for kind in ("s16le", "s16be", "s24le", "s32le", "f32le", "f64le", "u8",
                                                "alaw", "mulaw", "s24be", "s32be", "f32be"))
        names.update(("adpcm_ima_wav", "adpcm_ms", "adpcm_ima_qt", "g726", "g722"))
    return ",".join(sorted(names))


def decode_audio(
    data: bytes,
    *,
    filename: str | None = None,
    limits: DecodeLimits = DecodeLimits(),
    deadline: Deadline | None = None,
    decoders: tuple[str, ...] | None = None,
) -> Waveform:
    """Decode an encoded upload into a 16 kHz mono float32 :class:`Waveform`.

    The container is named from the content (:func:`sniff_format`); anything not on the allow-list
    (:data:`DEMUXERS`) is refused before a decoder sees it, and each decoder is told which demuxer to
    use and may open nothing but the bytes it was given. ``filename`` only names the upload in messages.

    Parameters
    ----------
    data
        The encoded file, as uploaded.
    filename
        The client's file name, if any.
    limits
        Size, duration and time limits.
    deadline
        An outer bound (the whole analysis); decoding stops when it passes.
    decoders
        Which of :func:`available_decoders` to try (default: all, in order); tests name one to
        check it alone.

    Raises
    ------
    EmptyUploadError
        ``data`` is empty.
    UploadTooLargeError
        ``data`` is over ``limits.max_upload_bytes`` (checked before decoding).
    UnsupportedFormatError
        Not an allowed audio container or codec (a manifest, playlist, image, video without audio ...).
    AudioTooLongError
        The audio is, or claims to be, longer than ``limits.max_duration_s``.
    UndecodableAudioError
        No decoder could read audio from ``data``, or decoding took longer than ``limits.decode_timeout_s``.
    ProcessingTimeoutError
        ``deadline`` passed.
    DecoderUnavailableError
        Neither PyAV nor the ffmpeg program is installed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_audio needs bytes, got {type(data).__name__}")
    data = bytes(data)
    name = repr(filename) if filename else "the upload"
    if not data:
        raise EmptyUploadError(f"{name} is empty (0 bytes). {SUPPORTED_FORMATS_HINT}")
    if len(data) > limits.max_upload_bytes:
        raise UploadTooLargeError(
            f"{name} is {_format_size(len(data))}, over the {_format_size(limits.max_upload_bytes)} limit. "
            "Upload a shorter or more compressed file (e.g. MP3, WEBM/Opus or M4A/AAC)."
        )
    container = sniff_format(data)
    if container is None:
        raise UnsupportedFormatError(f"{name} is not an audio file the service reads: {refusal_reason(data)}. "
                                     f"{SUPPORTED_FORMATS_HINT}")
    usable = available_decoders()
    in_process = "pyav" in usable and (decoders is None or "pyav" in decoders)
    program = "ffmpeg" in usable and (decoders is None or "ffmpeg" in decoders)
    if not (in_process or program):
        raise DecoderUnavailableError(
            "No audio decoder is installed on the server: install PyAV (pip install av) "
            "or the ffmpeg program (e.g. apt-get install ffmpeg)."
        )
    clock = _DecodeClock(limits, deadline)
    failure: _DecodeAttemptError | None = None
    samples: np.ndarray | None = None
    claimed_s: float | None = None
    if in_process:
        try:
            samples, claimed_s = _decode_with_pyav(data, container, limits, clock)
        except _DecodeAttemptError as exc:
            logger.debug("PyAV could not decode %s (%s): %s", name, container, exc)
            failure = exc
    # The program decodes what PyAV could not, and is asked again when PyAV returned clearly less than
    # the stream says it holds (a decoder that drops samples); the longer result is kept.
    short = samples is not None and _looks_short(samples.size / SAMPLE_RATE, claimed_s, limits)
    if (samples is None or short) and program:
        try:
            fallback = _decode_with_ffmpeg(data, container, limits, clock)
        except _DecodeAttemptError as exc:
            logger.debug("ffmpeg could not decode %s (%s): %s", name, container, exc)
            failure = failure or exc
        else:
            if samples is None or fallback.size > samples.size:
                if short:
                    logger.info("%s: PyAV decoded %.2f s of %.2f s claimed, the ffmpeg program %.2f s; using the "
                                "program's", name, samples.size / SAMPLE_RATE, claimed_s, fallback.size / SAMPLE_RATE)
                samples = fallback
    if samples is None:
        raise UndecodableAudioError(
            f"Could not decode {name} as audio (it looks like {container}; {failure}). {SUPPORTED_FORMATS_HINT}"
        )
    return _to_waveform(samples, container, limits, name)


def decode_file(
    path: str | os.PathLike[str], *, limits: DecodeLimits = DecodeLimits(), deadline: Deadline | None = None
) -> Waveform:
    """Decode an audio file on disk; see :func:`decode_audio`. The size limit is checked before reading."""
    path = Path(path)
    size_bytes = path.stat().st_size
    if size_bytes > limits.max_upload_bytes:
        raise UploadTooLargeError(
            f"{path.name!r} is {_format_size(size_bytes)}, over the {_format_size(limits.max_upload_bytes)} "
            "limit. Use a shorter or more compressed file."
        )
    return decode_audio(path.read_bytes(), filename=path.name, limits=limits, deadline=deadline)


def refusal_reason(data: bytes) -> str:
    """Why content that :func:`sniff_format` does not name is refused, in words for the client."""
    head = bytes(memoryview(data)[:4096])
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if any(text.startswith(marker) for marker in _REFERENCE_MARKERS) or b"\nc=in ip" in text[:4096]:
        return ("it is a playlist, manifest, session description or URL list, which refers to media elsewhere; "
                "the service only reads the bytes uploaded, so upload the audio file itself")
    for magic, offset, kind in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"it is {kind}"
    if len(data) > 1084 and data[1080:1084] in _MOD_TAGS:
        return "it is a tracker module (synthesised music, not a recording)"
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in head)
    if head and printable / len(head) > 0.95:
        return "it is text, not audio"
    return "no supported audio container was recognised"


class _DecodeAttemptError(Exception):
    """One decoder could not read the input (another may still)."""


class _DecodeClock:
    """The decode's own bound (``limits.decode_timeout_s``, answered 415 ``decode_timeout``) and an
    optional outer one (the whole analysis, answered 503 ``processing_timeout``)."""

    def __init__(self, limits: DecodeLimits, outer: Deadline | None) -> None:
        self.limit_s = limits.decode_timeout_s
        self.decode = Deadline(limits.decode_timeout_s, "decoding the upload")
        self.outer = outer

    def check(self) -> None:
        if self.decode.expired:
            raise _decode_timeout(self.limit_s)
        if self.outer is not None:
            self.outer.check()

    def remaining(self) -> float:
        outer = self.outer.remaining() if self.outer is not None else math.inf
        return min(self.decode.remaining(), outer)


def _decode_timeout(limit_s: float) -> UndecodableAudioError:
    return UndecodableAudioError(
        f"Decoding took longer than {limit_s:g} s and was stopped. Upload a shorter file. {SUPPORTED_FORMATS_HINT}",
        error_code="decode_timeout",
    )


def _looks_short(decoded_s: float, claimed_s: float | None, limits: DecodeLimits) -> bool:
    """True when a decoder returned well under the duration the stream states (and under the limit)."""
    if claimed_s is None or claimed_s < 1.0:
        return False
    return decoded_s < _SHORT_FRACTION * min(claimed_s, limits.max_duration_s)


class _MonoSink:
    """Decoded frames in, 16 kHz mono float32 out, written into one array of at most ``capacity``
    samples: channels are averaged and the rate converted as frames arrive, so memory follows the
    decoded audio (and the duration limit), never what a header claims.

    ``np.empty`` only reserves address space; pages become resident as samples are written.
    """

    def __init__(self, av: Any, capacity: int) -> None:
        self._av = av
        self.buffer = np.empty(capacity, dtype=np.float32)
        self.filled = 0
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._rate: int | None = None
        self._resampler: Any | None = None

    @property
    def full(self) -> bool:
        return self.filled >= self.buffer.size

    def push(self, frame: Any) -> None:
        if frame.sample_rate != self._rate:  # a new stream, or a rate change mid-stream (MP3 allows it)
            self._drain(final=True)
            self._rate = frame.sample_rate
            self._resampler = None
            if self._rate != SAMPLE_RATE:
                self._resampler = self._av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        mono = frame_to_mono(frame)
        self._pending.append(mono)
        self._pending_samples += mono.size
        if self._pending_samples >= _RESAMPLE_BLOCK:
            self._drain(final=False)

    def finish(self) -> np.ndarray:
        self._drain(final=True)
        return self.buffer[: self.filled]

    def _drain(self, *, final: bool) -> None:
        if self._pending:
            block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            self._pending, self._pending_samples = [], 0
            if self._resampler is None:
                self._write(block)
            else:
                frame = self._av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
                frame.sample_rate = self._rate
                for out in self._resampler.resample(frame):
                    self._write(out.to_ndarray()[0])
        if final and self._resampler is not None:
            for out in self._resampler.resample(None):
                self._write(out.to_ndarray()[0])
            self._resampler = self._av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def _write(self, samples: np.ndarray) -> None:
        count = min(samples.size, self.buffer.size - self.filled)
        self.buffer[self.filled : self.filled + count] = samples[:count]
        self.filled += count


def frame_to_mono(frame: Any) -> np.ndarray:
    """A PyAV audio frame as (time,) float32: integer samples scaled to [-1, 1), channels averaged.

    Reads the frame's planes directly (PyAV's ``to_ndarray`` stacks a copy per call)."""
    channels, count = frame.layout.nb_channels, frame.samples
    dtype = _SAMPLE_DTYPES[frame.format.name.rstrip("p")]
    if frame.format.is_planar:
        planes = frame.planes[:channels]
        array = (np.frombuffer(planes[0], dtype, count=count)[None, :] if channels == 1
                 else np.stack([np.frombuffer(plane, dtype, count=count) for plane in planes]))
    else:  # packed: one plane of interleaved samples
        array = np.frombuffer(frame.planes[0], dtype, count=count * channels).reshape(count, channels).T
    if array.dtype.kind == "u":  # u8: silence is 128
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif array.dtype.kind == "i":
        array = array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize - 1))
    if channels == 1:
        return np.array(array[0], dtype=np.float32)  # a copy: the frame's buffer is not ours to keep
    return array.mean(axis=0, dtype=np.float32)


def _capacity(limits: DecodeLimits) -> int:
    """Samples kept at most: the duration limit plus a margin, so "longer than the limit" is observed."""
    return int((limits.max_duration_s + _DECODE_MARGIN_S) * SAMPLE_RATE)


def _decode_with_pyav(
    data: bytes, container: str, limits: DecodeLimits, clock: _DecodeClock
) -> tuple[np.ndarray, float | None]:
    """Decode in process with the forced demuxer; (time,) float32 at SAMPLE_RATE, not yet sanitised,
    and the duration the stream states (None when it states none). Damaged packets are skipped."""
    av = _pyav()
    if av is None:
        raise _DecodeAttemptError("PyAV is not installed")
    demuxer = DEMUXERS[container]
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer, container_options=_libav_options(demuxer)) as source:
            if not source.streams.audio:
                kinds = sorted({stream.type for stream in source.streams})
                raise UnsupportedFormatError(
                    f"The upload ({container}) holds no audio stream"
                    f"{' (only ' + ', '.join(kinds) + ')' if kinds else ''}. {SUPPORTED_FORMATS_HINT}",
                    error_code="no_audio_stream",
                )
            stream = source.streams.audio[0]
            codec = stream.codec_context.codec.canonical_name if stream.codec_context.codec else "unknown"
            if not codec_allowed(codec):
                raise UnsupportedFormatError(
                    f"The audio in the upload is coded as {codec!r}, which the service does not decode. "
                    f"{SUPPORTED_FORMATS_HINT}", error_code="unsupported_codec")
            claimed_s = _claimed_duration(source, stream)
            if claimed_s is not None and claimed_s > limits.max_duration_s and container not in _ESTIMATED:
                raise _too_long(claimed_s, limits, claimed=True)
            _check_stream_shape(stream)
            sink = _MonoSink(av, _capacity(limits))
            damaged = 0
            for packet in source.demux(stream):
                clock.check()
                try:
                    frames = packet.decode()
                except (av.FFmpegError, ValueError) as exc:  # a damaged packet: skip it, as the program does
                    damaged += 1
                    if damaged > _MAX_DAMAGED_PACKETS:
                        raise _DecodeAttemptError(f"PyAV: too many damaged packets ({exc})") from exc
                    continue
                for frame in frames:
                    sink.push(frame)
                if sink.full:
                    break
            samples = sink.finish()
    except (av.FFmpegError, ValueError, RuntimeError, EOFError) as exc:
        raise _DecodeAttemptError(f"PyAV: {_last_reason(str(exc))}") from exc
    except MemoryError:
        raise
    except OSError as exc:  # libav's own I/O errors are FFmpegErrors; this is the server short of something
        raise resource_error(exc, "decode the upload") from exc
    if samples.size == 0:
        raise _DecodeAttemptError("PyAV decoded no audio")
    return samples, claimed_s


def _libav_options(demuxer: str) -> dict[str, str]:
    """Options for the demuxer: open no protocol (the bytes come through our own I/O), no other
    demuxer, no decoder outside the allow-list; for MP4, no external data references."""
    options = {"protocol_whitelist": "none", "format_whitelist": demuxer, "codec_whitelist": _decoder_whitelist()}
    if demuxer == "mov":
        options.update(enable_drefs="0", use_absolute_path="0")
    return options


def _claimed_duration(source: Any, stream: Any) -> float | None:
    """Seconds the stream (or, failing that, the container) states; None when neither does."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if source.duration is not None and source.duration > 0:
        return source.duration / 1_000_000  # AV_TIME_BASE
    return None


def _check_stream_shape(stream: Any) -> None:
    context = stream.codec_context
    rate, channels = context.sample_rate or 0, context.channels or 0
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise UnsupportedFormatError(
            f"The audio's sample rate is {rate} Hz; the service reads {_MIN_RATE}-{_MAX_RATE} Hz. "
            f"{SUPPORTED_FORMATS_HINT}", error_code="unsupported_codec")
    if channels > _MAX_CHANNELS:
        raise UnsupportedFormatError(
            f"The audio has {channels} channels; the service reads at most {_MAX_CHANNELS}. Mix it down first.",
            error_code="unsupported_codec")


def _decode_with_ffmpeg(data: bytes, container: str, limits: DecodeLimits, clock: _DecodeClock) -> np.ndarray:
    """Decode with the ffmpeg program, the demuxer forced; (time,) float32 at SAMPLE_RATE, not sanitised.

    The upload is handed over as an anonymous in-memory file (nothing on disk; gone when closed),
    as ``pipe:N``, or for MP4/M4A, whose index may sit at the end, as ``/proc/self/fd/N`` to seek in.
    Its 32-bit float WAV output is read as it streams, channels averaged block by block into one
    array that stops at the duration limit; the program is killed past the decode's time bound.
    """
    program = shutil.which("ffmpeg")
    if program is None:
        raise _DecodeAttemptError("the ffmpeg program is not installed")
    demuxer = DEMUXERS[container]
    seekable = demuxer == "mov"
    options = _libav_options(demuxer)
    options["protocol_whitelist"] = "file" if seekable else "pipe"
    input_args = [arg for key, value in options.items() for arg in (f"-{key}", value)]
    with _anonymous_file(data) as fd:
        source = f"/proc/self/fd/{fd}" if seekable else f"pipe:{fd}"
        args = [program, "-nostdin", "-hide_banner", "-loglevel", "error", *input_args, "-f", demuxer, "-i", source,
                "-map", "0:a:0", "-vn", "-sn", "-dn", "-t", f"{limits.max_duration_s + _DECODE_MARGIN_S:.3f}",
                "-c:a", "pcm_f32le", "-ar", str(SAMPLE_RATE), "-bitexact", "-f", "wav", "pipe:1"]  # fmt: skip
        try:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, pass_fds=(fd,))
        except OSError as exc:  # no process, memory or descriptor could be had for it
            raise resource_error(exc, "start the ffmpeg program") from exc
    stderr_tail = _Tail(process.stderr)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(max(0.0, clock.remaining()), stop)
    watchdog.start()
    try:
        samples = _read_float_wav(process.stdout, _capacity(limits))
        process.kill()  # done reading: at the limit, or the program has finished anyway
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        stderr_tail.join()
    if timed_out.is_set():  # say which bound passed
        clock.check()
        raise _decode_timeout(clock.limit_s)
    if samples is None or samples.size == 0:
        reason = _last_reason(stderr_tail.text) or f"exit status {returncode}"
        raise _DecodeAttemptError(f"ffmpeg: {reason}")
    return samples


@contextmanager
def _anonymous_file(data: bytes) -> Iterator[int]:
    """A file descriptor holding ``data`` at offset 0, with no name on any disk: a memfd where Linux
    has one, else a temporary file unlinked at creation. Closed (and so gone) on exit."""
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("soundsentry-upload", os.MFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            fd = os.dup(tempfile.TemporaryFile().fileno())
    except OSError as exc:
        raise resource_error(exc, "hold the upload for the ffmpeg program") from exc
    try:
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.write(fd, view[written:])
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    except OSError as exc:
        raise resource_error(exc, "hold the upload for the ffmpeg program") from exc
    finally:
        os.close(fd)


class _Tail:
    """Drains a pipe on its own thread (so the program never blocks on it), keeping the last 4 KiB."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._kept = b""
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for chunk in iter(lambda: self._pipe.read(4096), b""):
                self._kept = (self._kept + chunk)[-4096:]
        except (OSError, ValueError):
            pass

    def join(self) -> None:
        self._thread.join(timeout=5)
        self._pipe.close()

    @property
    def text(self) -> str:
        return self._kept.decode(errors="replace")


def _read_float_wav(stream: Any, capacity: int) -> np.ndarray | None:
    """ffmpeg's streamed 32-bit float WAV (sizes may read 0xFFFFFFFF) as (time,) mono float32, the
    channels averaged block by block into an array of at most ``capacity`` samples. None when the
    stream is not such a WAV (nothing decoded)."""
    header = _read_exactly(stream, 12)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    channels = 0
    while True:  # chunks up to "data"
        chunk = _read_exactly(stream, 8)
        if len(chunk) < 8:
            return None
        chunk_id, size = struct.unpack("<4sI", chunk)
        if chunk_id == b"data":
            break
        if size > 1 << 16:
            return None
        body = _read_exactly(stream, size + (size & 1))
        if chunk_id == b"fmt " and len(body) >= 4:
            (channels,) = struct.unpack_from("<H", body, 2)
    if channels <= 0:
        return None
    buffer = np.empty(capacity, dtype=np.float32)
    filled, frame_bytes = 0, 4 * channels
    block = bytearray()
    while filled < capacity:
        piece = stream.read(1 << 16)
        if not piece:
            break
        block += piece
        usable = len(block) // frame_bytes * frame_bytes
        if not usable:
            continue
        frames = np.frombuffer(block, dtype="<f4", count=usable // 4).reshape(-1, channels)
        mono = frames[:, 0] if channels == 1 else frames.mean(axis=1, dtype=np.float32)
        count = min(mono.size, capacity - filled)
        buffer[filled : filled + count] = mono[:count]
        filled += count
        del frames
        block = block[usable:]
    return buffer[:filled]


def _read_exactly(stream: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            break
        data += piece
    return data


def _last_reason(message: str) -> str:
    """The last line of a decoder's message without the file name or source location before it."""
    lines = message.strip().splitlines()
    return lines[-1].rsplit(": ", 1)[-1][-200:] if lines else ""


def _too_long(duration_s: float, limits: DecodeLimits, *, claimed: bool = False) -> AudioTooLongError:
    how_long = f"claims to last {duration_s:.1f} s" if claimed else f"lasts at least {duration_s:.1f} s"
    return AudioTooLongError(
        f"The audio {how_long}, over the {limits.max_duration_s:g} s limit. "
        "Upload a shorter recording or cut it into parts."
    )


def _format_size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes:,} bytes"


def _to_waveform(samples: np.ndarray, source_format: str, limits: DecodeLimits, name: str) -> Waveform:
    """Check length, replace NaN/Inf by 0 and clip to [-1, 1] (in place)."""
    if samples.size == 0:
        raise UndecodableAudioError(f"{name} decoded to zero audio samples. {SUPPORTED_FORMATS_HINT}")
    duration_s = samples.size / SAMPLE_RATE
    if duration_s > limits.max_duration_s:
        raise _too_long(duration_s, limits)
    for start in range(0, samples.size, _SANITISE_BLOCK):  # in blocks: nan_to_num's masks stay small
        block = samples[start : start + _SANITISE_BLOCK]
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(block, -1.0, 1.0, out=block)
    return Waveform(samples, SAMPLE_RATE, source_format)


def encode_audio(
    samples: np.ndarray,
    fmt: str,
    *,
    bitrate: str | None = None,
    sample_rate: int = SAMPLE_RATE,
    faststart: bool = False,
) -> bytes:
    """Encode float samples in [-1, 1] into a file's bytes (WAV in Python, the rest with ffmpeg).

    Parameters
    ----------
    samples
        (time,) or (channel, time) finite samples.
    fmt
        ``wav`` (16-bit PCM), ``flac``, ``mp3``, ``webm`` (Opus), ``ogg`` (Vorbis), ``opus``
        (Ogg/Opus), ``m4a`` (AAC) or ``aac`` (ADTS).
    bitrate
        Encoder bitrate such as ``"32k"``; None keeps the encoder's default. Ignored for WAV/FLAC.
    sample_rate
        Rate of ``samples`` in Hz; the file keeps it (Opus encoders may pick the nearest rate they allow).
    faststart
        For ``m4a``: put the index (moov) before the audio. By default ffmpeg writes it at the end.

    Raises
    ------
    ValueError
        On an unknown ``fmt``, bad shape, non-finite samples or non-positive ``sample_rate``.
    DecoderUnavailableError
        ``fmt`` needs the ffmpeg program and it is not installed.
    """
    if fmt not in ENCODE_FORMATS:
        raise ValueError(f"Unknown fmt {fmt!r}; choose one of {', '.join(ENCODE_FORMATS)}")
    channels_first = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    if channels_first.ndim != 2 or channels_first.shape[0] == 0:
        raise ValueError(f"samples must be (time,) or (channel, time), got shape {np.shape(samples)}")
    if not np.isfinite(channels_first).all():
        raise ValueError("samples must be finite; replace NaN/Inf before encoding")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    num_channels = channels_first.shape[0]
    interleaved = np.clip(channels_first, -1.0, 1.0).T  # (time, channel)
    if fmt == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(num_channels)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            writer.writeframes(np.round(interleaved * 32767).astype("<i2").tobytes())
        return buffer.getvalue()
    program = shutil.which("ffmpeg")
    if program is None:
        raise DecoderUnavailableError(
            f"Encoding {fmt} needs the ffmpeg program; install it (e.g. apt-get install ffmpeg)."
        )
    codec_args, needs_seekable_output = _ENCODE_ARGS[fmt]
    args = [program, "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(sample_rate),
            "-ac", str(num_channels), "-i", "pipe:0", *codec_args]  # fmt: skip
    args += ["-b:a", bitrate] if bitrate else []
    args += ["-movflags", "+faststart"] if faststart and fmt == "m4a" else []
    raw = interleaved.astype("<f4").tobytes()
    if not needs_seekable_output:
        return _run_encoder([*args, "pipe:1"], raw)
    with tempfile.TemporaryDirectory(prefix="soundsentry-") as tmp_dir:
        out_path = Path(tmp_dir) / f"encoded.{fmt}"
        _run_encoder([*args, "-y", str(out_path)], raw)
        return out_path.read_bytes()


def _run_encoder(args: list[str], raw: bytes) -> bytes:
    completed = subprocess.run(args, input=raw, capture_output=True, timeout=_ENCODE_TIMEOUT_S, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to encode: {completed.stderr.decode(errors='replace').strip()}")
    return completed.stdout
