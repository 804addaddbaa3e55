"""Shared fixtures: small real audio made on the fly with espeak-ng and the ffmpeg program.

Nothing here uses ``soundsentry``, so the decoder is tested against files it did not make.

Fixtures (all session-scoped)
-----------------------------
``speech_wav``        ~5 s English sentence, 16 kHz mono 16-bit WAV path.
``encode_as``         ``encode_as(fmt, source=None, extra_args=()) -> Path``: ``speech_wav`` (or
                      ``source``) encoded as one of :data:`ENCODINGS`.
``two_speaker_wav``   ~15 s, a male and a female espeak-ng voice alternating four turns with 0.5 s pauses.
``two_speaker_turns`` the reference turns of ``two_speaker_wav``: ``[(start_s, end_s, speaker), ...]``.
``silence_wav``       5 s of digital silence.  ``noise_wav``: 5 s of low white noise (std 0.01).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from soundsentry.constants import SAMPLE_RATE

PAUSE_S = 0.5

# name -> (file suffix, ffmpeg output arguments)
ENCODINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wav": (".wav", ("-c:a", "pcm_s16le")),
    "mp3": (".mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    "webm": (".webm", ("-c:a", "libopus", "-b:a", "32k", "-f", "webm")),
    "ogg": (".ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    "opus": (".opus", ("-c:a", "libopus", "-b:a", "32k", "-f", "ogg")),
    "m4a": (".m4a", ("-c:a", "aac", "-b:a", "64k")),  # ffmpeg's default mux: moov at the end
    "m4a_faststart": (".m4a", ("-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart")),
    "flac": (".flac", ("-c:a", "flac")),
    "aac": (".aac", ("-c:a", "aac", "-b:a", "64k", "-f", "adts")),
}

TWO_SPEAKER_SCRIPT = (
    ("male", "en-us+m3", 30, "Good morning, could we talk about the schedule for next week?"),
    ("female", "en-us+f4", 70, "Of course, I think Tuesday afternoon works well for me."),
    ("male", "en-us+m3", 30, "Great, then let us book the small meeting room at three."),
    ("female", "en-us+f4", 70, "Perfect, I will send everyone an invitation this evening."),
)


def require_program(name: str, package: str) -> str:
    """Path of ``name``, or skip the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; install it (e.g. apt-get install {package}) to run audio tests")
    return path


def run_ffmpeg(*args: str) -> None:
    """Run the ffmpeg program quietly, overwriting outputs; fail loudly with its stderr."""
    ffmpeg = require_program("ffmpeg", "ffmpeg")
    completed = subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {completed.stderr.decode(errors='replace')}")


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write (time,) or (channel, time) floats in [-1, 1] as 16-bit PCM WAV."""
    channels_first = np.atleast_2d(samples)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels_first.shape[0])
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(np.round(np.clip(channels_first.T, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV as ((time,) mono float32 average of channels, sample_rate)."""
    with wave.open(str(path), "rb") as reader:
        assert reader.getsampwidth() == 2, f"{path} is not 16-bit PCM"
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        channels = reader.getnchannels()
        return (frames.reshape(-1, channels).mean(axis=1) / 32768).astype(np.float32), reader.getframerate()


def speak(text: str, out_path: Path, *, voice: str = "en-us", pitch: int = 50, words_per_minute: int = 150) -> Path:
    """Synthesise ``text`` with espeak-ng and convert it to 16 kHz mono WAV at ``out_path``."""
    espeak = require_program("espeak-ng", "espeak-ng")
    raw_path = out_path.with_suffix(".espeak.wav")
    subprocess.run(
        [espeak, "-v", voice, "-p", str(pitch), "-s", str(words_per_minute), "-w", str(raw_path), text],
        check=True,
        capture_output=True,
    )
    run_ffmpeg("-i", str(raw_path), "-ar", str(SAMPLE_RATE), "-ac", "1", "-c:a", "pcm_s16le", str(out_path))
    return out_path


def trim_silence(samples: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold``."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_wav(audio_dir: Path) -> Path:
    """~5 s of one English sentence, 16 kHz mono 16-bit WAV."""
    text = "The quick brown fox jumps over the lazy dog, then runs into the forest."
    return speak(text, audio_dir / "speech.wav")


@pytest.fixture(scope="session")
def encode_as(audio_dir: Path, speech_wav: Path) -> Callable[..., Path]:
    """Return ``encode_as(fmt, source=None, extra_args=()) -> Path``, cached per arguments.

    ``fmt`` is a key of :data:`ENCODINGS`; ``source`` defaults to ``speech_wav``; ``extra_args`` are
    more ffmpeg output options (e.g. ``("-output_ts_offset", "100")``).
    """
    cache: dict[tuple[str, Path, tuple[str, ...]], Path] = {}

    def encode(fmt: str, source: Path | None = None, extra_args: Sequence[str] = ()) -> Path:
        source = source or speech_wav
        key = (fmt, source, tuple(extra_args))
        if key not in cache:
            suffix, codec_args = ENCODINGS[fmt]
            out_path = audio_dir / f"{source.stem}-{fmt}-{len(cache)}{suffix}"
            run_ffmpeg("-i", str(source), *codec_args, *extra_args, str(out_path))
            cache[key] = out_path
        return cache[key]

    return encode


@pytest.fixture(scope="session")
def two_speaker_turns(audio_dir: Path) -> list[tuple[float, float, str]]:
    """Reference turns of ``two_speaker_wav``: ``[(start_s, end_s, speaker), ...]``, speaker male/female."""
    pieces: list[np.ndarray] = []
    turns: list[tuple[float, float, str]] = []
    cursor_s = 0.0
    for index, (speaker, voice, pitch, text) in enumerate(TWO_SPEAKER_SCRIPT):
        turn_path = speak(text, audio_dir / f"turn{index}.wav", voice=voice, pitch=pitch, words_per_minute=165)
        speech = trim_silence(read_wav(turn_path)[0])
        if pieces:
            pieces.append(np.zeros(round(PAUSE_S * SAMPLE_RATE), dtype=np.float32))
            cursor_s += PAUSE_S
        turns.append((round(cursor_s, 3), round(cursor_s + speech.size / SAMPLE_RATE, 3), speaker))
        pieces.append(speech)
        cursor_s += speech.size / SAMPLE_RATE
    write_wav(audio_dir / "two_speakers.wav", np.concatenate(pieces))
    return turns


@pytest.fixture(scope="session")
def two_speaker_wav(audio_dir: Path, two_speaker_turns: list[tuple[float, float, str]]) -> Path:
    """~15 s dialogue, 16 kHz mono WAV: male (en-us+m3, pitch 30) and female (en-us+f4, pitch 70) voices
    alternate four ~3.5 s turns with 0.5 s pauses. Turn times are in ``two_speaker_turns``."""
    return audio_dir / "two_speakers.wav"


@pytest.fixture(scope="session")
def silence_wav(audio_dir: Path) -> Path:
    """5 s of digital silence, 16 kHz mono WAV."""
    return write_wav(audio_dir / "silence.wav", np.zeros(5 * SAMPLE_RATE, dtype=np.float32))


@pytest.fixture(scope="session")
def noise_wav(audio_dir: Path) -> Path:
    """5 s of low white noise (standard deviation 0.01), 16 kHz mono WAV; seeded."""
    noise = np.random.default_rng(0).normal(0.0, 0.01, 5 * SAMPLE_RATE).astype(np.float32)
    return write_wav(audio_dir / "noise.wav", noise)
