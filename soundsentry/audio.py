"""Decode uploads into 16 kHz mono float32 waveforms (and encode audio for tests and augmentation).

Decoding runs in process with torchcodec (libav) first, because spawning the ``ffmpeg`` program costs
about ten times more for a short chunk. The program, fed through a pipe, is the fallback: torchcodec
gives up on the whole file at the first damaged packet (an upload cut short, say), where the program
keeps what decoded before it. Both paths
downmix by averaging the channels, resample to :data:`SAMPLE_RATE`, replace NaN/Inf by 0, clip to
[-1, 1] and stop decoding shortly after ``DecodeLimits.max_duration_s``, so a small file that expands
to hours of audio cannot exhaust memory.

Usage
-----
>>> waveform = decode_audio(upload_bytes, filename="clip.webm")
>>> waveform.samples.shape, waveform.sample_rate  # ((time,), 16000)
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundsentry.errors import (
    AudioTooLongError,
    DecoderUnavailableError,
    EmptyUploadError,
    StorageUnavailableError,
    UndecodableAudioError,
    UploadTooLargeError,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SUPPORTED_FORMATS_HINT = "Upload a WAV, MP3, WEBM/Opus, OGG, M4A/AAC or FLAC file."

# Decode this much past the duration limit, so that "longer than the limit" is observed, not guessed.
_DECODE_MARGIN_S = 1.0
_SANITISE_BLOCK = 1 << 20  # samples
_STREAM_FROM_S = 600.0  # longer claimed durations decode through _stream_with_ffmpeg (bounded memory)
# Containers whose index may sit at the end of the file: the ffmpeg program needs to seek in them.
_SEEKING_FORMATS = frozenset({"m4a", "mp4"})
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
        Longest decoded audio accepted, in seconds.
    ffmpeg_timeout_s
        Wall-clock limit for one run of the ``ffmpeg`` program; it is killed past it.
    """

    max_upload_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 3 * 3600.0
    ffmpeg_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes <= 0 or self.max_duration_s <= 0 or self.ffmpeg_timeout_s <= 0:
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
    head = bytes(memoryview(data)[:512])
    if head[:3] == b"ID3" and len(head) >= 10:
        # ID3v2 tag: 28-bit "syncsafe" size, plus a 10-byte footer when flag 0x10 is set.
        tag_bytes = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
        tag_bytes += 10 if head[5] & 0x10 else 0
        inner = _sniff_head(bytes(memoryview(data)[tag_bytes : tag_bytes + 512]))
        return inner if inner in ("flac", "aac") else "mp3"
    return _sniff_head(head)


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
    if head[:4] == b"ADIF" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0):
        return "aac"  # ADTS: 12-bit sync, layer 00
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame: version != reserved, layer != 00, bitrate != 1111, sample rate != 11
        valid = head[1] & 0x18 != 0x08 and head[1] & 0x06 and head[2] >> 4 != 0xF and head[2] & 0x0C != 0x0C
        return "mp3" if valid else None
    return None


def ffmpeg_available() -> bool:
    """True when the ``ffmpeg`` program is on PATH (the fallback decoder; :func:`encode_audio` needs it)."""
    return shutil.which("ffmpeg") is not None


def available_decoders() -> tuple[str, ...]:
    """Names of the decoders usable here, in the order they are tried: ``torchcodec``, ``ffmpeg``."""
    found = ("torchcodec",) if _torchcodec_decoder_class() is not None else ()
    return found + (("ffmpeg",) if ffmpeg_available() else ())


@functools.lru_cache(maxsize=1)
def _torchcodec_decoder_class() -> Any | None:
    """torchcodec's ``AudioDecoder``, or None when torchcodec or the libav libraries it loads are missing."""
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, OSError, RuntimeError) as exc:
        logger.warning("torchcodec is unusable (%s); decoding falls back to the ffmpeg program", exc)
        return None
    return AudioDecoder


def decode_audio(data: bytes, *, filename: str | None = None, limits: DecodeLimits = DecodeLimits()) -> Waveform:
    """Decode an encoded upload into a 16 kHz mono float32 :class:`Waveform`.

    The format is sniffed from the content; ``filename`` only names the upload in messages and hints
    at the container when the content is not recognised.

    Parameters
    ----------
    data
        The encoded file, as uploaded.
    filename
        The client's file name, if any.
    limits
        Size, duration and time limits.

    Raises
    ------
    EmptyUploadError
        ``data`` is empty.
    UploadTooLargeError
        ``data`` is over ``limits.max_upload_bytes`` (checked before decoding).
    AudioTooLongError
        The audio is, or claims to be, longer than ``limits.max_duration_s``.
    UndecodableAudioError
        No decoder could read audio from ``data``, or it took longer than ``limits.ffmpeg_timeout_s``.
    DecoderUnavailableError
        Neither torchcodec nor the ffmpeg program is installed.
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
    source_format = sniff_format(data)
    extension = Path(filename).suffix.lower().lstrip(".") if filename else ""
    use_torchcodec = _torchcodec_decoder_class() is not None
    use_ffmpeg = ffmpeg_available()
    if not (use_torchcodec or use_ffmpeg):
        raise DecoderUnavailableError(
            "No audio decoder is installed on the server: install torchcodec (pip install torchcodec) "
            "or the ffmpeg program (e.g. apt-get install ffmpeg)."
        )
    failure: _DecodeAttemptError | None = None
    samples: np.ndarray | None = None
    if use_torchcodec:
        try:
            samples = _decode_with_torchcodec(data, limits, needs_seek=_needs_seek(source_format, extension))
        except _DecodeAttemptError as exc:
            logger.debug("torchcodec could not decode %s (%s): %s", name, source_format, exc)
            failure = exc
    if samples is None and use_ffmpeg:
        try:
            samples = _decode_with_ffmpeg(data, limits, needs_seek=_needs_seek(source_format, extension))
        except _DecodeAttemptError as exc:
            logger.debug("ffmpeg could not decode %s (%s): %s", name, source_format, exc)
            failure = exc
    if samples is None:
        looks_like = f"it looks like {source_format}" if source_format else "no known audio format was recognised"
        raise UndecodableAudioError(
            f"Could not decode {name} as audio ({looks_like}; {failure}). {SUPPORTED_FORMATS_HINT}"
        )
    return _to_waveform(samples, source_format or extension or "unknown", limits, name)


def decode_file(path: str | os.PathLike[str], *, limits: DecodeLimits = DecodeLimits()) -> Waveform:
    """Decode an audio file on disk; see :func:`decode_audio`. The size limit is checked before reading."""
    path = Path(path)
    size_bytes = path.stat().st_size
    if size_bytes > limits.max_upload_bytes:
        raise UploadTooLargeError(
            f"{path.name!r} is {_format_size(size_bytes)}, over the {_format_size(limits.max_upload_bytes)} "
            "limit. Use a shorter or more compressed file."
        )
    return decode_audio(path.read_bytes(), filename=path.name, limits=limits)


class _DecodeAttemptError(Exception):
    """One decoder could not read the input (another may still)."""


def _needs_seek(source_format: str | None, extension: str) -> bool:
    """Whether the ffmpeg program must read from a seekable file rather than a pipe."""
    if source_format is None:
        return True  # unknown content: give ffmpeg's probing every chance
    return source_format in _SEEKING_FORMATS or extension in ("m4a", "mp4", "mov", "3gp")


def _decode_with_torchcodec(data: bytes, limits: DecodeLimits, *, needs_seek: bool = False) -> np.ndarray:
    """Decode in process; (time,) float32 at SAMPLE_RATE, channels averaged, not yet sanitised.

    Recordings that claim more than ``_STREAM_FROM_S`` go to :func:`_stream_with_ffmpeg` instead:
    torchcodec's one-call decode of an hour of Opus peaked at 3.3 times the size of its result.
    """
    decoder_class = _torchcodec_decoder_class()
    if decoder_class is None:
        raise _DecodeAttemptError("torchcodec is not installed")
    try:
        # Resample here, but downmix ourselves: libswresample's 7.1 -> mono matrix sums channels
        # (8 identical channels came out 4.4x louder), where we want their mean.
        decoder = decoder_class(data, sample_rate=SAMPLE_RATE)
        # duration_seconds falls back to the container's header (WEBM/Matroska keep it only there).
        claimed_s = decoder.metadata.duration_seconds
        if claimed_s is not None and claimed_s > limits.max_duration_s:
            raise _too_long(claimed_s, limits, claimed=True)
        if claimed_s is not None and claimed_s > _STREAM_FROM_S and ffmpeg_available():
            channels = decoder.metadata.num_channels or 1
            return _stream_with_ffmpeg(data, limits, claimed_s, channels, needs_seek=needs_seek)
        # Streams may start at a non-zero timestamp (a cut from a recording); reading from 0 finds
        # no frames there, so start where the stream says it starts.
        start_s = decoder.metadata.begin_stream_seconds_from_header or 0.0
        stop_s = start_s + limits.max_duration_s + _DECODE_MARGIN_S
        decoded = decoder.get_samples_played_in_range(start_s, stop_s).data  # (channel, time)
    except (RuntimeError, ValueError) as exc:
        raise _DecodeAttemptError(f"torchcodec: {_last_reason(str(exc))}") from exc
    mono = decoded[0] if decoded.shape[0] == 1 else decoded.mean(dim=0)
    return np.ascontiguousarray(mono.numpy(), dtype=np.float32)


def _decode_with_ffmpeg(data: bytes, limits: DecodeLimits, *, needs_seek: bool = False) -> np.ndarray:
    """Decode with the ffmpeg program; (time,) float32 at SAMPLE_RATE, channels averaged, not sanitised.

    Reads from a pipe, or from a file in a temporary directory (always removed) when ``needs_seek``.
    """
    program = shutil.which("ffmpeg")
    if program is None:
        raise _DecodeAttemptError("the ffmpeg program is not installed")
    # WAV output (not raw f32le) keeps the channel count, so the channels can be averaged here.
    output_args = ["-vn", "-t", f"{limits.max_duration_s + _DECODE_MARGIN_S:.3f}", "-c:a", "pcm_f32le",
                   "-ar", str(SAMPLE_RATE), "-f", "wav", "pipe:1"]  # fmt: skip
    base_args = [program, "-nostdin", "-hide_banner", "-loglevel", "error", "-i"]
    if needs_seek:
        try:
            tmp_dir_context = tempfile.TemporaryDirectory(prefix="soundsentry-")
        except OSError as exc:
            raise _storage_error(exc) from exc
        with tmp_dir_context as tmp_dir:
            try:
                with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".upload", delete=False) as tmp_file:
                    tmp_file.write(data)
            except OSError as exc:
                raise _storage_error(exc) from exc
            wav_bytes = _run_ffmpeg([*base_args, tmp_file.name, *output_args], None, limits.ffmpeg_timeout_s)
    else:
        wav_bytes = _run_ffmpeg([*base_args, "pipe:0", *output_args], data, limits.ffmpeg_timeout_s)
    return _float_wav_to_mono(wav_bytes)


def _stream_with_ffmpeg(
    data: bytes, limits: DecodeLimits, claimed_s: float, channels: int, *, needs_seek: bool
) -> np.ndarray:
    """Long recordings: ffmpeg's mono float32 output read straight into one preallocated array, so
    peak memory is about the size of the result. Channels are averaged by a ``pan`` filter (its
    plain ``-ac 1`` sums some layouts). Killed past ``limits.ffmpeg_timeout_s``."""
    program = shutil.which("ffmpeg")
    mean = "+".join(f"{1.0 / channels:.6f}*c{i}" for i in range(channels))
    output_args = ["-vn", "-t", f"{limits.max_duration_s + _DECODE_MARGIN_S:.3f}", "-af", f"pan=mono|c0={mean}",
                   "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="soundsentry-") as tmp_dir:
        source = "pipe:0"
        if needs_seek:
            source = os.path.join(tmp_dir, "upload")
            with open(source, "wb") as handle:
                handle.write(data)
        args = [program, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", source, *output_args]
        with open(os.path.join(tmp_dir, "stderr"), "w+b") as errors:
            try:
                process = subprocess.Popen(args, stdin=subprocess.PIPE if source == "pipe:0" else subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=errors)
            except OSError as exc:
                raise DecoderUnavailableError(f"The server could not start the ffmpeg program ({exc}); "
                                              "this is a server fault. Retry later.") from exc
            watchdog = threading.Timer(limits.ffmpeg_timeout_s, process.kill)
            watchdog.start()
            if source == "pipe:0":
                threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
            try:
                samples = _read_floats(process.stdout, int((claimed_s + 2 * _DECODE_MARGIN_S) * SAMPLE_RATE))
                returncode = process.wait()
            finally:
                watchdog.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if not watchdog.is_alive() and returncode < 0:
                raise UndecodableAudioError(
                    f"Decoding took longer than {limits.ffmpeg_timeout_s:g} s and was stopped. Upload a shorter file. "
                    f"{SUPPORTED_FORMATS_HINT}", error_code="decode_timeout")
            if returncode != 0 or samples.size == 0:
                errors.seek(0)
                reason = _last_reason(errors.read().decode(errors="replace")) or f"exit status {returncode}"
                raise _DecodeAttemptError(f"ffmpeg: {reason}")
    return samples


def _feed(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # ffmpeg stopped reading (error, limit or kill): its exit status tells why
        pass


def _read_floats(stream: Any, expected: int) -> np.ndarray:
    """float32 samples of ``stream`` into an array of ``expected`` samples (grown if it runs over).

    ``np.empty`` only reserves address space: pages become resident as samples arrive, so a small
    file that claims a long duration costs no memory it does not fill."""
    buffer = np.empty(expected, dtype=np.float32)
    view, filled = memoryview(buffer).cast("B"), 0
    overflow: list[bytes] = []
    while True:
        if filled < len(view):
            count = stream.readinto(view[filled : filled + (1 << 20)])
            if not count:
                break
            filled += count
        else:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            overflow.append(chunk)
    samples = buffer[: filled // 4]
    if overflow:
        extra = b"".join(overflow)
        samples = np.concatenate([samples, np.frombuffer(extra[: len(extra) // 4 * 4], dtype=np.float32)])
    return samples


def _storage_error(exc: OSError) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"The server could not write a temporary copy of the upload for ffmpeg ({exc.strerror or exc}); "
        "this is a server fault. Retry later, or upload WAV, MP3, WEBM/Opus, OGG or FLAC, which need no copy."
    )


def _run_ffmpeg(args: list[str], stdin_bytes: bytes | None, timeout_s: float) -> bytes:
    """Run ffmpeg, return its stdout; killed past ``timeout_s``."""
    stdin: dict[str, Any] = {"input": stdin_bytes} if stdin_bytes is not None else {"stdin": subprocess.DEVNULL}
    try:
        completed = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False, **stdin)
    except OSError as exc:  # the program vanished, or no process/memory could be had for it
        raise DecoderUnavailableError(
            f"The server could not start the ffmpeg program ({exc.strerror or exc}); this is a server fault. "
            "Retry later."
        ) from exc
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed and reaped it
        raise UndecodableAudioError(
            f"Decoding took longer than {timeout_s:g} s and was stopped. Upload a shorter file. "
            f"{SUPPORTED_FORMATS_HINT}",
            error_code="decode_timeout",
        ) from exc
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace")
        raise _DecodeAttemptError(f"ffmpeg: {_last_reason(stderr) or f'exit status {completed.returncode}'}")
    return completed.stdout


def _last_reason(message: str) -> str:
    """The last line of a decoder's message without the file name or source location before it."""
    lines = message.strip().splitlines()
    return lines[-1].rsplit(": ", 1)[-1][-200:] if lines else ""


def _float_wav_to_mono(wav_bytes: bytes) -> np.ndarray:
    """Parse ffmpeg's streamed float32 WAV (chunk sizes may read 0xFFFFFFFF) and average its channels."""
    if wav_bytes[:4] != b"RIFF" or wav_bytes[8:12] != b"WAVE":
        raise _DecodeAttemptError("ffmpeg produced no audio")
    position, num_channels = 12, 0
    while position + 8 <= len(wav_bytes):
        chunk_id, chunk_size = struct.unpack_from("<4sI", wav_bytes, position)
        if chunk_id == b"fmt ":
            (num_channels,) = struct.unpack_from("<H", wav_bytes, position + 10)
        elif chunk_id == b"data" and num_channels > 0:
            payload = memoryview(wav_bytes)[position + 8 :]
            usable_bytes = len(payload) // (4 * num_channels) * 4 * num_channels
            frames = np.frombuffer(payload[:usable_bytes], dtype="<f4").reshape(-1, num_channels)
            return frames.mean(axis=1, dtype=np.float32)  # a new, writable (time,) array
        position += 8 + chunk_size + (chunk_size & 1)
    raise _DecodeAttemptError("ffmpeg produced no audio data")


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
