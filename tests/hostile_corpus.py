"""The hostile upload corpus: one table of uploads a hostile or careless client could send, each with
the answer the service must give, within a time and a memory bound, leaving nothing behind.

``tests/test_hostile_corpus.py`` runs every case through the real app in process (with fault
injection for the cases that need it). Run against a live server, the same table gives a
before/after report of status, time, peak RSS growth, reach and leftovers:

    python -m tests.hostile_corpus --url http://127.0.0.1:8000 --pid PID --spool DIR [--out report.csv]

``--pid`` (the server's process) measures RSS growth by resetting and reading its peak (VmHWM), so
run it as the server's user; ``--spool`` is the server's temp directory, checked for leftovers.
Cases that need in-process control (tight limits, injected faults) are skipped there.

The classes follow the hardening issue: ``reach`` (files that refer to other resources),
``memory`` (files whose header understates or omits their length), ``slots`` (time bounds),
``faults`` (the server short of descriptors, disk or memory), ``truncation`` (codecs one decoder
reads short), and the earlier ``garbage``, ``damaged`` and ``shape`` classes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsentry.constants import SAMPLE_RATE

RSS_BOUND_MB = 300.0  # the target: any upload within the default limits adds at most this to peak RSS


# ----------------------------------------------------------------------------- what an upload could reach


@dataclass
class Watchers:
    """What a hostile upload could reach, and whether it did."""

    tcp_port: int
    udp_port: int
    marker: Path  # a FIFO: opening it for reading is what we detect
    connections: list[tuple[str, int]] = field(default_factory=list)
    marker_opened: threading.Event = field(default_factory=threading.Event)
    udp_seen: threading.Event = field(default_factory=threading.Event)

    def clear(self) -> None:
        self.connections.clear()
        self.marker_opened.clear()
        self.udp_seen.clear()

    def reached(self) -> list[str]:
        found = []
        if self.connections:
            found.append(f"TCP connection(s) to 127.0.0.1:{self.tcp_port} from {self.connections}")
        if self.marker_opened.is_set():
            found.append(f"the marker {self.marker} was opened")
        if self.udp_seen.is_set():
            found.append(f"a UDP socket was bound on port {self.udp_port}")
        return found


def _udp_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
    return ports


@contextlib.contextmanager
def watching(directory: Path) -> Iterator[Watchers]:
    """Three watchers, live until exit: a TCP listener on 127.0.0.1 that must receive no connection,
    a FIFO marker (``directory/marker.wav``) that must not be opened, and the system's UDP table,
    which must never show the port an SDP payload names."""
    marker = directory / "marker.wav"
    os.mkfifo(marker)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    udp_port = probe.getsockname()[1]
    probe.close()  # a port that was free a moment ago: only an SDP decode would bind it again
    found = Watchers(tcp_port=listener.getsockname()[1], udp_port=udp_port, marker=marker)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, peer = listener.accept()
            except (TimeoutError, OSError):
                continue
            found.connections.append(peer)
            connection.close()

    def watch_marker() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), open(marker, "wb") as writer:  # blocks until a reader opens it
                if stop.is_set():
                    return
                found.marker_opened.set()
                writer.write(pcm_wav(np.zeros(1600, np.float32)))

    def watch_udp() -> None:
        while not stop.is_set():
            if udp_port in _udp_ports():
                found.udp_seen.set()
            time.sleep(0.005)

    threads = [threading.Thread(target=target, daemon=True) for target in (accept, watch_marker, watch_udp)]
    for thread in threads:
        thread.start()
    try:
        yield found
    finally:
        stop.set()
        with contextlib.suppress(OSError):  # release the marker watcher's blocking open
            os.close(os.open(marker, os.O_RDONLY | os.O_NONBLOCK))
        for thread in threads:
            thread.join(timeout=2)
        listener.close()


def reference_payloads(w: Watchers) -> dict[str, bytes]:
    """Files whose only content is a reference to something else, one per class."""
    url = f"http://127.0.0.1:{w.tcp_port}/x.m4a"
    marker = str(w.marker)
    dash = ('<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" mediaPresentationDuration="PT4S">'
            '<BaseURL>{}</BaseURL><Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" '
            'bandwidth="64000" codecs="mp4a.40.2"><BaseURL>x.m4a</BaseURL></Representation></AdaptationSet>'
            "</Period></MPD>")
    hls = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{}\n#EXT-X-ENDLIST\n"
    sdp = (f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {w.udp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return {
        "dash-http": dash.format(url).encode(),
        "dash-file": dash.format(marker).encode(),
        "hls-http": hls.format(url).encode(),
        "hls-file": hls.format(marker).encode(),
        "ffconcat-relative": b"ffconcat version 1.0\nfile marker.wav\n",
        "ffconcat-absolute": f"ffconcat version 1.0\nfile '{marker}'\n".encode(),
        "ffconcat-url": f"ffconcat version 1.0\nfile '{url}'\n".encode(),
        "concat-protocol": f"concat:{marker}|{marker}".encode(),
        "sdp-rtp": sdp.encode(),
        "m3u-plain": f"{marker}\n{url}\n".encode(),
        "m3u-extended": f"#EXTM3U\n#EXTINF:4,x\n{url}\n".encode(),
        "pls-playlist": f"[playlist]\nFile1={url}\nNumberOfEntries=1\n".encode(),
        "subfile": f"subfile,,start,0,end,0,,:{marker}".encode(),
        "data-uri": b"data:audio/wav;base64," + base64.b64encode(pcm_wav(np.zeros(1600, np.float32))),
        "tee": f"tee:{marker}|{url}".encode(),
        "http-url": url.encode(),
        "file-url": f"file:{marker}".encode(),
        "smil": f'<smil><body><audio src="{url}"/></body></smil>'.encode(),
    }


def disguised_payloads(w: Watchers) -> dict[str, bytes]:
    """References dressed as allowed containers, so the magic bytes pass and a forced demuxer sees them."""
    plain = reference_payloads(w)
    riff = b"RIFF\xff\xff\xff\xffWAVE"  # sizes without a zero byte: probing would read the text after it
    return {
        "wav-then-dash": riff + plain["dash-http"],
        "wav-then-hls": riff + b"\n" + plain["hls-http"],
        "id3-then-hls": b"ID3\x04\x00\x00\x00\x00\x00\x00" + plain["hls-file"],
        "ftyp-then-ffconcat": b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00M4A " + plain["ffconcat-absolute"],
        "ogg-then-sdp": b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01vorbis" + bytes(23) + plain["sdp-rtp"],
        "ebml-then-dash": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + plain["dash-file"],
        "flac-then-concat": b"fLaC" + plain["concat-protocol"],
    }


def other_payloads() -> dict[str, bytes]:
    """Not recordings: synthesised music, images."""
    module = bytearray(4096)  # a 4 KB ProTracker module: decoded, it would play for hours
    module[1080:1084] = b"M.K."
    return {
        "midi": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
        "tracker-mod": bytes(module),
        "tracker-xm": b"Extended Module: song" + bytes(400),
        "tracker-it": b"IMPM" + bytes(400),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200),
        "gif": b"GIF89a" + bytes(200),
    }


# ----------------------------------------------------------------------------- audio builders


def pcm_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, data_size: int | None = None) -> bytes:
    """16-bit PCM WAV of (time,) or (channel, time) floats; ``data_size`` overrides the size the data
    chunk claims (to lie about the length)."""
    frames = (np.clip(np.atleast_2d(samples), -1, 1).T * 32767).astype("<i2").tobytes()
    channels = np.atleast_2d(samples).shape[0]
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    claimed = len(frames) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", claimed) + frames
    return b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 4 + len(body) - len(frames) + claimed)) + body


def float_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """IEEE-float (format 3) WAV, NaN and Inf kept."""
    frames = np.atleast_2d(samples).astype("<f4").T.tobytes()
    channels = np.atleast_2d(samples).shape[0]
    fmt = struct.pack("<HHIIHH", 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def ffmpeg(*args: str, stdout: Path | None = None) -> None:
    """Run the ffmpeg program quietly; with ``stdout``, its output goes to a pipe into that file (so
    a muxer cannot seek back to write the total length)."""
    program = shutil.which("ffmpeg")
    if program is None:
        raise RuntimeError("the corpus needs the ffmpeg program (apt-get install ffmpeg)")
    command = [program, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    if stdout is None:
        completed = subprocess.run(command, capture_output=True, check=False)
    else:
        with stdout.open("wb") as handle:
            completed = subprocess.run([*command, "pipe:1"], stdout=handle, stderr=subprocess.PIPE, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {completed.stderr.decode(errors='replace')}")


# name -> (container suffix, ffmpeg codec arguments, sample rate): codecs a WAV/AIFF/MOV may carry that
# the service decodes; the in-process decoder once read IMA-ADPCM short (26 % of the samples).
ADPCM_AND_PCM = {
    "adpcm_ima_wav": (".wav", ("-c:a", "adpcm_ima_wav"), 16_000),
    "adpcm_ms": (".wav", ("-c:a", "adpcm_ms"), 16_000),
    "adpcm_yamaha": (".wav", ("-c:a", "adpcm_yamaha"), 16_000),
    "adpcm_g726": (".wav", ("-c:a", "adpcm_g726", "-b:a", "32k"), 8_000),
    "adpcm_g722": (".wav", ("-c:a", "g722"), 16_000),
    "adpcm_ima_qt_aiff": (".aiff", ("-c:a", "adpcm_ima_qt"), 16_000),
    "adpcm_ima_qt_mov": (".mov", ("-c:a", "adpcm_ima_qt"), 16_000),
    "pcm_u8": (".wav", ("-c:a", "pcm_u8"), 16_000),
    "pcm_s24le": (".wav", ("-c:a", "pcm_s24le"), 44_100),
    "pcm_f64le": (".wav", ("-c:a", "pcm_f64le"), 22_050),
    "pcm_alaw": (".wav", ("-c:a", "pcm_alaw"), 8_000),
    "pcm_mulaw": (".wav", ("-c:a", "pcm_mulaw"), 8_000),
    "pcm_s16be_aiff": (".aiff", ("-c:a", "pcm_s16be"), 16_000),
}

# the allowed containers, as the test fixtures encode them: name -> (suffix, ffmpeg arguments)
ENCODINGS = {
    "wav": (".wav", ("-c:a", "pcm_s16le")),
    "mp3": (".mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    "webm": (".webm", ("-c:a", "libopus", "-b:a", "32k", "-f", "webm")),
    "ogg": (".ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    "opus": (".opus", ("-c:a", "libopus", "-b:a", "32k", "-f", "ogg")),
    "m4a": (".m4a", ("-c:a", "aac", "-b:a", "64k")),
    "m4a_faststart": (".m4a", ("-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart")),
    "flac": (".flac", ("-c:a", "flac")),
    "aac": (".aac", ("-c:a", "aac", "-b:a", "64k", "-f", "adts")),
}


class Sources:
    """Builds (once each, cached) the files the cases upload, under ``workdir``, from ``speech``
    (a short 16 kHz mono speech WAV)."""

    def __init__(self, workdir: Path, speech: Path, watchers: Watchers) -> None:
        self.workdir, self.speech, self.watchers = workdir, speech, watchers

    def path(self, name: str) -> Path:
        return self.workdir / name

    @functools.cached_property
    def speech_samples(self) -> np.ndarray:
        data = self.speech.read_bytes()
        at = data.index(b"data") + 8
        return np.frombuffer(data[at:], "<i2").astype(np.float32) / 32768.0

    @functools.cache  # noqa: B019 - one Sources per corpus run
    def encoded(self, fmt: str) -> bytes:
        suffix, args = ENCODINGS[fmt]
        out = self.path(f"speech-{fmt}{suffix}")
        ffmpeg("-i", str(self.speech), *args, str(out))
        return out.read_bytes()

    @functools.cache  # noqa: B019
    def codec(self, name: str) -> bytes:
        """~8.4 s of speech and a tone (long enough to see a short decode) in one of :data:`ADPCM_AND_PCM`."""
        suffix, args, rate = ADPCM_AND_PCM[name]
        out = self.path(f"codec-{name}{suffix}")
        ffmpeg("-i", str(self.speech), "-f", "lavfi", "-i", "sine=frequency=220:duration=8.4",
               "-filter_complex", "[0:a]apad=whole_dur=8.4[s];[s][1:a]amix=inputs=2:duration=first",
               "-t", "8.4", "-ar", str(rate), "-ac", "1", *args, str(out))
        return out.read_bytes()

    @functools.cache  # noqa: B019
    def silence_flac(self, channels: int, minutes: int, *, piped: bool) -> bytes:
        """Silence as FLAC. ``piped``: 60 s stream-copied ``minutes`` times into a pipe, so STREAMINFO
        states no total length (cheap to build: a few seconds for 3 h)."""
        layout = {1: "mono", 8: "7.1"}[channels]
        minute = self.path(f"minute-{channels}ch.flac")
        if not minute.exists():
            ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=16000:cl={layout}", "-t", "60", "-c:a", "flac", str(minute))
        return self._looped(minute, minutes, f"silence-{channels}ch-{minutes}min{'-piped' if piped else ''}.flac",
                            "flac", piped=piped)

    @functools.cache  # noqa: B019
    def silence_webm(self, *, piped: bool) -> bytes:
        """3 h 05 min of 6 kb/s Opus silence; ``piped``: the header says 60 s, the stream runs 3 h."""
        minute = self.path("minute-silence.webm")
        if not minute.exists():
            ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "60", "-c:a", "libopus", "-b:a", "6k",
                   "-frame_duration", "60", "-f", "webm", str(minute))
        return self._looped(minute, 185, f"three-hours{'-piped' if piped else ''}.webm", "webm", piped=piped)

    def _looped(self, minute: Path, times: int, name: str, muxer: str, *, piped: bool) -> bytes:
        """``minute`` repeated ``times`` times without re-encoding; ``piped``: written to a pipe, so the
        muxer cannot seek back to write the total length into the header."""
        out = self.path(name)
        loop = ("-stream_loop", str(times - 1), "-i", str(minute), "-c", "copy", "-f", muxer)
        if piped:
            ffmpeg(*loop, stdout=out)
        else:
            ffmpeg(*loop, str(out))
        return out.read_bytes()

    @functools.cache  # noqa: B019
    def video_only(self, suffix: str, codec: str) -> bytes:
        out = self.path(f"video{suffix}")
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1", "-c:v", codec, str(out))
        return out.read_bytes()

    @functools.cache  # noqa: B019
    def g723(self) -> bytes:
        out = self.path("g723.wav")
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=1", "-c:a", "g723_1",
               "-b:a", "6.3k", str(out))
        return out.read_bytes()

    @functools.cache  # noqa: B019
    def wide_wav(self) -> bytes:
        """8 channels at 192 kHz: 2.5 s of the speech on channel 0."""
        out = self.path("eight-192k.wav")
        ffmpeg("-i", str(self.speech), "-af", "pan=7.1|FL=c0", "-ar", "192000", "-c:a", "pcm_s16le", str(out))
        return out.read_bytes()


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One hostile upload and the answer it must get.

    ``statuses``/``codes``: acceptable HTTP statuses and ``error_code`` values (a 200 has none);
    ``max_s``: wall-clock bound on the request; ``max_rss_mb``: bound on peak RSS growth;
    ``settings``: which app runs it (``default``: the shipped limits; ``tight_decode``/``tight_detection``:
    a tiny decode or detection bound); ``fault``: a server-side fault injected while it runs (in process only);
    ``min_duration_s``: for a 200, the decoded duration must be at least this (no silent truncation).
    """

    name: str
    group: str
    build: Callable[[Sources], bytes]
    statuses: tuple[int, ...]
    codes: tuple[str, ...] = ()
    filename: str = "upload.wav"
    form: tuple[tuple[str, str], ...] = ()
    max_s: float = 5.0
    max_rss_mb: float = RSS_BOUND_MB
    settings: str = "default"
    fault: str | None = None
    min_duration_s: float | None = None

    @property
    def in_process_only(self) -> bool:
        return self.settings != "default" or self.fault is not None


REFUSED = ("unsupported_format", "undecodable_audio")
_REFERENCE_NAMES = ("dash-http", "dash-file", "hls-http", "hls-file", "ffconcat-relative", "ffconcat-absolute",
                    "ffconcat-url", "concat-protocol", "sdp-rtp", "m3u-plain", "m3u-extended", "pls-playlist",
                    "subfile", "data-uri", "tee", "http-url", "file-url", "smil")
_DISGUISED_NAMES = ("wav-then-dash", "wav-then-hls", "id3-then-hls", "ftyp-then-ffconcat", "ogg-then-sdp",
                    "ebml-then-dash", "flac-then-concat")
_OTHER_NAMES = ("midi", "tracker-mod", "tracker-xm", "tracker-it", "png", "jpeg", "gif")
_EXTENSIONS = (".wav", ".mp3", ".webm", ".ogg", ".opus", ".m4a", ".aac", ".flac")
_DAMAGEABLE = tuple(ENCODINGS)


def _damaged(fmt: str, how: str) -> Callable[[Sources], bytes]:
    def build(sources: Sources) -> bytes:
        data = sources.encoded(fmt)
        if how == "header-only":
            return data[:64]
        if how == "truncated-half":
            return data[: len(data) // 2]
        flipped = bytearray(data)  # every 7th byte of the middle third inverted
        for at in range(len(data) // 3, 2 * len(data) // 3, 7):
            flipped[at] ^= 0xFF
        return bytes(flipped)
    return build


def _cases() -> list[Case]:
    cases: list[Case] = []
    for name in _REFERENCE_NAMES:
        cases.append(Case(f"reach/{name}", "reach", lambda s, n=name: reference_payloads(s.watchers)[n],
                          (415,), ("unsupported_format",), filename=f"{name}.m4a", max_s=2))
    for name in _DISGUISED_NAMES:
        cases.append(Case(f"reach/{name}", "reach", lambda s, n=name: disguised_payloads(s.watchers)[n],
                          (415,), REFUSED, filename=f"{name}.wav", max_s=2))
    for name in _OTHER_NAMES:
        cases.append(Case(f"reach/{name}", "reach", lambda s, n=name: other_payloads()[n], (415,),
                          ("unsupported_format",), filename=f"{name}.mp3", max_s=2))
    cases += [
        Case("reach/video-only-mp4", "reach", lambda s: s.video_only(".mp4", "mpeg4"), (415,),
             ("no_audio_stream",), filename="clip.mp4", max_s=3),
        Case("reach/video-only-webm", "reach", lambda s: s.video_only(".webm", "libvpx"), (415,),
             ("no_audio_stream",), filename="clip.webm", max_s=3),
        Case("reach/g723-in-wav", "reach", lambda s: s.g723(), (415,), ("unsupported_codec", "undecodable_audio")),
    ]
    # memory: files whose header omits or understates their length, at the default limits (30 min)
    cases += [
        Case("memory/flac-8ch-3h-no-length", "memory", lambda s: s.silence_flac(8, 180, piped=True), (413,),
             ("audio_too_long",), filename="long.flac", max_s=60),
        Case("memory/flac-mono-3h-no-length", "memory", lambda s: s.silence_flac(1, 180, piped=True), (413,),
             ("audio_too_long",), filename="long.flac", max_s=30),
        Case("memory/flac-8ch-29min-diarization", "memory", lambda s: s.silence_flac(8, 29, piped=False), (200,),
             filename="meeting.flac", form=(("use_diarization", "true"),), max_s=60, min_duration_s=29 * 60 - 1),
        Case("memory/webm-says-60s-runs-3h", "memory", lambda s: s.silence_webm(piped=True), (413,),
             ("audio_too_long",), filename="long.webm", max_s=60),
        Case("memory/webm-says-3h", "memory", lambda s: s.silence_webm(piped=False), (413,), ("audio_too_long",),
             filename="long.webm", max_s=5),
        Case("memory/wav-claims-4gib", "memory", lambda s: pcm_wav(s.speech_samples, data_size=0xFFFFFFF0), (200,),
             min_duration_s=2.0),
        Case("memory/wav-8ch-192khz", "memory", lambda s: s.wide_wav(), (200,), min_duration_s=2.0),
    ]
    # slots: every decode and every detection has a wall-clock bound
    cases += [
        Case("slots/decode-past-its-bound", "slots", lambda s: s.silence_flac(8, 29, piped=False), (415,),
             ("decode_timeout",), filename="meeting.flac", max_s=5, settings="tight_decode"),
        Case("slots/detection-past-its-bound", "slots",
             lambda s: pcm_wav(np.tile(s.speech_samples, 40)), (503,), ("processing_timeout",), max_s=8,
             settings="tight_detection"),
    ]
    # faults: the server short of descriptors, disk or memory answers 503 with an error_code
    for fault, code in (("emfile-memfd", "resources_exhausted"), ("emfile-spawn", "resources_exhausted"),
                        ("emfile-pyav", "resources_exhausted"), ("enospc-spool", "storage_unavailable"),
                        ("emfile-spool", "resources_exhausted"), ("memory-decode", "insufficient_memory"),
                        ("memory-detection", "insufficient_memory")):
        big = fault.endswith("spool")
        cases.append(Case(f"faults/{fault}", "faults",
                          (lambda s: pcm_wav(np.concatenate([s.speech_samples, np.zeros(40 * SAMPLE_RATE)])))
                          if big else (lambda s: s.encoded("webm")),
                          (503,), (code,), filename="speech.wav" if big else "speech.webm", fault=fault))
    # truncation: every codec a WAV/AIFF/MOV may carry is decoded whole
    for name in ADPCM_AND_PCM:
        cases.append(Case(f"truncation/{name}", "truncation", lambda s, n=name: s.codec(n), (200,),
                          filename=f"{name}{ADPCM_AND_PCM[name][0]}", min_duration_s=8.0))
    # garbage: random bytes under every accepted extension
    for extension in _EXTENSIONS:
        cases.append(Case(f"garbage/random{extension}", "garbage",
                          lambda s, e=extension: np.random.default_rng(len(e)).bytes(20_000), (415,), REFUSED,
                          filename=f"random{extension}", max_s=2))
    cases += [
        Case("garbage/empty", "garbage", lambda s: b"", (400,), ("empty_file",)),
        Case("garbage/text-named-mp3", "garbage", lambda s: b"this is not audio\n" * 100, (415,),
             ("unsupported_format",), filename="notes.mp3"),
        Case("garbage/hostile-filename", "garbage", lambda s: s.encoded("flac"), (200,),
             filename="../../etc/passwd;rm -rf ~.wav", min_duration_s=2.0),
    ]
    # damaged: truncations and corruptions of every container (a 200 of what survives, or a 415)
    for fmt in _DAMAGEABLE:
        for how in ("header-only", "truncated-half", "bytes-flipped"):
            cases.append(Case(f"damaged/{fmt}-{how}", "damaged", _damaged(fmt, how), (200, 415),
                              ("undecodable_audio", "unsupported_format", "no_audio_stream"),
                              filename=f"damaged{ENCODINGS[fmt][0]}", max_s=5))
    # shape: odd but valid audio
    cases += [
        Case("shape/nan-and-inf-float-wav", "shape",
             lambda s: float_wav(np.where(np.arange(s.speech_samples.size) % 100 == 0, np.nan, s.speech_samples)),
             (200,), min_duration_s=2.0),
        Case("shape/zero-samples-wav", "shape", lambda s: pcm_wav(np.zeros(0, np.float32)), (415, 200),
             ("undecodable_audio",)),
        Case("shape/one-sample-wav", "shape", lambda s: pcm_wav(np.ones(1, np.float32) * 0.1), (200, 415),
             ("undecodable_audio", "audio_too_short")),
    ]
    return cases


CASES: tuple[Case, ...] = tuple(_cases())


# ----------------------------------------------------------------------------- measuring one case


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1])
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int | str = "self") -> bool:
    """Reset a process's peak RSS (VmHWM) to its current RSS; False where the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@dataclass
class Outcome:
    case: str
    status: int
    error_code: str
    seconds: float
    rss_growth_mb: float | None
    leftovers: list[str]
    reached: list[str]
    duration_s: float | None = None


def leftovers(spool: Path | None, before: set[str]) -> list[str]:
    if spool is None or not spool.exists():
        return []
    return sorted(str(path) for path in spool.rglob("*") if str(path) not in before)


def measure(post: Callable[[Case, bytes], tuple[int, dict]], case: Case, data: bytes, *, pid: int | str,
            spool: Path | None, watchers: Watchers) -> Outcome:
    """Send one case through ``post`` and measure what it cost."""
    before = {str(path) for path in spool.rglob("*")} if spool is not None and spool.exists() else set()
    watchers.clear()
    rss_before, _ = rss_kib(pid)
    can_reset = reset_peak(pid)
    start = time.monotonic()
    status, body = post(case, data)
    seconds = time.monotonic() - start
    _, peak = rss_kib(pid)
    time.sleep(0.02)  # late reach attempts
    duration = body.get("duration_config", {}).get("duration") if status == 200 else None
    return Outcome(case=case.name, status=status, error_code=str(body.get("error_code", "")), seconds=seconds,
                   rss_growth_mb=(peak - rss_before) / 1024 if can_reset else None,
                   leftovers=leftovers(spool, before), reached=watchers.reached(), duration_s=duration)


def problems(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with ``outcome`` for ``case``; empty when it is as required."""
    found = []
    if outcome.status not in case.statuses:
        found.append(f"status {outcome.status}, expected one of {case.statuses}")
    elif outcome.status != 200 and outcome.error_code not in case.codes:
        found.append(f"error_code {outcome.error_code!r}, expected one of {case.codes}")
    if outcome.seconds > case.max_s:
        found.append(f"took {outcome.seconds:.2f} s, over {case.max_s} s")
    if outcome.rss_growth_mb is not None and outcome.rss_growth_mb > case.max_rss_mb:
        found.append(f"peak RSS grew {outcome.rss_growth_mb:.0f} MB, over {case.max_rss_mb:.0f} MB")
    if outcome.leftovers:
        found.append(f"left behind {outcome.leftovers}")
    if outcome.reached:
        found.append(f"reached {outcome.reached}")
    if case.min_duration_s is not None and outcome.status == 200 and (outcome.duration_s or 0) < case.min_duration_s:
        found.append(f"decoded {outcome.duration_s} s, expected at least {case.min_duration_s} s")
    return found


# ----------------------------------------------------------------------------- against a live server


def _espeak_speech(out: Path) -> Path:
    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError("the corpus needs espeak-ng (apt-get install espeak-ng)")
    raw = out.with_suffix(".raw.wav")
    subprocess.run([program, "-w", str(raw), "Good morning, could we talk about the schedule for next week?"],
                   check=True, capture_output=True)
    ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", "-t", "2.5", "-c:a", "pcm_s16le", str(out))
    return out


def _http_post(url: str, api_key: str | None, timeout_s: float) -> Callable[[Case, bytes], tuple[int, dict]]:
    import json
    import urllib.error
    import urllib.request
    import uuid

    def post(case: Case, data: bytes) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in case.form]
        safe_name = case.filename.replace('"', "")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{safe_name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if api_key:
            headers["X-API-Key"] = api_key
        request = urllib.request.Request(f"{url.rstrip('/')}/predict", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read() or b"{}")
            except ValueError:
                return error.code, {}
        except (OSError, TimeoutError) as error:
            return 0, {"error_code": f"no answer: {error}"}

    return post


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, help="the server's process id (for peak RSS growth)")
    parser.add_argument("--spool", type=Path, help="the server's temp directory (for leftovers)")
    parser.add_argument("--api-key", default=os.environ.get("SOUNDSENTRY_API_KEY"))
    parser.add_argument("--only", default="", help="run the cases whose name starts with this")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    parser.add_argument("--out", type=Path, help="write the outcomes as CSV here")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="hostile-corpus-") as tmp:
        workdir = Path(tmp)
        with watching(workdir) as watchers:
            sources = Sources(workdir, _espeak_speech(workdir / "speech.wav"), watchers)
            post = _http_post(args.url, args.api_key, args.timeout)
            rows = []
            for case in CASES:
                if case.in_process_only or not case.name.startswith(args.only):
                    continue
                outcome = measure(post, case, case.build(sources), pid=args.pid or "self", spool=args.spool,
                                  watchers=watchers)
                if args.pid is None:
                    outcome.rss_growth_mb = None
                wrong = problems(case, outcome)
                failed += bool(wrong)
                growth = "-" if outcome.rss_growth_mb is None else f"{outcome.rss_growth_mb:.0f}"
                sys.stdout.write(f"{'FAIL' if wrong else 'ok  '} {case.name:42s} {outcome.status} "
                                 f"{outcome.error_code:20s} {outcome.seconds:7.2f} s {growth:>6s} MB  "
                                 f"{'; '.join(wrong)}\n")
                sys.stdout.flush()
                rows.append({**outcome.__dict__, "problems": "; ".join(wrong)})
    if args.out and rows:
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    sys.stdout.write(f"{len(rows) - failed}/{len(rows)} cases as required\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
