"""Property-based fuzzing (hypothesis) of the decode path and the request path.

Inputs: real audio in every accepted format, mutated (bit flips, overwritten header fields,
truncations, headers spliced onto other bodies, repeated chunks) and plain random bytes.

- ``decode_audio`` must return a valid :class:`Waveform` or raise an ``InputError`` (a 4xx);
  never another exception, and never leave a temp file.
- ``POST /predict`` must never answer 5xx, and the server must stay healthy.

CI runs ``SOUNDSENTRY_FUZZ_EXAMPLES`` (default 200) decode cases and an eighth as many API cases,
derandomised. For a long run::

    SOUNDSENTRY_FUZZ_EXAMPLES=10000 SOUNDSENTRY_FUZZ_REPORT=fuzz.json \
        PYTHONPATH=. nice -n 10 .venv/bin/python -m pytest -q tests/test_fuzz.py

``SOUNDSENTRY_FUZZ_REPORT`` names a JSON file that receives the outcome counts (per status /
error code) and the number of 5xx answers and leaked temp files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.core.config import Settings
from api.main import create_app
from soundsentry.audio import SAMPLE_RATE, DecodeLimits, Waveform, decode_audio
from soundsentry.errors import InputError
from tests.conftest import ENCODINGS, run_ffmpeg

EXAMPLES = int(os.environ.get("SOUNDSENTRY_FUZZ_EXAMPLES", "200"))
API_EXAMPLES = max(10, EXAMPLES // 8)
LONG_RUN = EXAMPLES > 200
LIMITS = DecodeLimits(max_upload_bytes=2 * 1024 * 1024, max_duration_s=120.0, decode_timeout_s=20.0)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OUTCOMES: dict[str, Counter] = {"decode": Counter(), "api": Counter()}


@pytest.fixture(scope="module")
def seeds(audio_dir: Path, speech_wav: Path) -> dict[str, bytes]:
    """~1.5 s of speech in every accepted format, plus a float WAV, 8-channel FLAC and a live WEBM."""
    short = audio_dir / "fuzz-seed.wav"
    run_ffmpeg("-i", str(speech_wav), "-t", "1.5", "-c:a", "pcm_s16le", str(short))
    out: dict[str, bytes] = {}
    for fmt, (suffix, args) in ENCODINGS.items():
        path = audio_dir / f"fuzz-seed-{fmt}{suffix}"
        run_ffmpeg("-i", str(short), *args, str(path))
        out[fmt] = path.read_bytes()
    extra = {
        "wav_float": (".wav", ("-c:a", "pcm_f32le")),
        "flac_8ch": (".flac", ("-ac", "8", "-c:a", "flac")),
        "webm_live": (".webm", ("-c:a", "libopus", "-b:a", "32k", "-live", "1", "-f", "webm")),
        "mp3_44k_stereo": (".mp3", ("-ar", "44100", "-ac", "2", "-c:a", "libmp3lame")),
    }
    for fmt, (suffix, args) in extra.items():
        path = audio_dir / f"fuzz-seed-{fmt}{suffix}"
        run_ffmpeg("-i", str(short), *args, str(path))
        out[fmt] = path.read_bytes()
    return out


SUFFIXES = (".wav", ".mp3", ".webm", ".ogg", ".opus", ".m4a", ".aac", ".flac", "", ".txt")


@st.composite
def fuzzed_uploads(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, str, bytes]:
    """(description, file name, bytes): a mutated seed or random bytes."""
    names = sorted(seeds)
    kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "splice", "repeat", "random", "magic"]))
    seed_name = draw(st.sampled_from(names))
    data = bytearray(seeds[seed_name])
    size = len(data)
    # positions mostly in the header, where the parsers make their decisions
    position = st.one_of(st.integers(0, min(size - 1, 512)), st.integers(0, size - 1))
    if kind == "flip":
        for offset in draw(st.lists(position, min_size=1, max_size=32)):
            data[offset] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":  # size and count fields: 0, 0xFF.., random
        for _ in range(draw(st.integers(1, 4))):
            offset = draw(position)
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80"])) * width
            if draw(st.booleans()):
                value = draw(st.binary(min_size=width, max_size=width))
            data[offset : offset + width] = value
    elif kind == "truncate":
        data = data[: draw(st.integers(0, size))]
    elif kind == "splice":  # the head of one format on the body of another
        other = seeds[draw(st.sampled_from(names))]
        cut_a = draw(st.integers(0, min(size, 4096)))
        cut_b = draw(st.integers(0, len(other)))
        data = data[:cut_a] + other[cut_b:]
    elif kind == "repeat":  # a chunk repeated: duplicated headers, pages, packets
        start = draw(st.integers(0, size - 1))
        end = draw(st.integers(start, min(size, start + 4096)))
        times = draw(st.integers(2, 50))
        data = data[:start] + data[start:end] * times + data[end:]
    elif kind == "random":
        data = bytearray(draw(st.binary(min_size=0, max_size=8192)))
    else:  # a real magic number, then garbage
        magic = draw(st.sampled_from([b"RIFF\xff\xff\xff\xffWAVEfmt ", b"fLaC", b"OggS\x00\x02", b"\x1a\x45\xdf\xa3",
                                      b"\x00\x00\x00\x20ftypM4A ", b"ID3\x04\x00\x00", b"\xff\xfb\x90\x64",
                                      b"\xff\xf1\x50\x80", b"ADIF", b"FORM\x00\x00\x00\x00AIFF"]))
        data = bytearray(magic + draw(st.binary(min_size=0, max_size=4096)))
    suffix = draw(st.sampled_from(SUFFIXES))
    return f"{kind}:{seed_name}", f"fuzz{suffix}", bytes(data)


@pytest.fixture(scope="module")
def private_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point tempfile at an empty directory for the module, to see anything left behind."""
    directory = tmp_path_factory.mktemp("fuzz-tmp")
    previous = tempfile.tempdir
    tempfile.tempdir = str(directory)
    yield directory
    tempfile.tempdir = previous


def write_report(every: int = 1) -> None:
    """Write the outcome counts to ``SOUNDSENTRY_FUZZ_REPORT`` (every ``every`` cases, so a long run
    that is stopped still leaves its counts)."""
    path = os.environ.get("SOUNDSENTRY_FUZZ_REPORT")
    done = sum(OUTCOMES["decode"].values()) + sum(OUTCOMES["api"].values())
    if not path or done % every:
        return
    summary: dict = {name: dict(sorted(counts.items())) for name, counts in OUTCOMES.items()}
    summary["planned"] = {"decode": EXAMPLES, "api": API_EXAMPLES}
    summary["done"] = {name: sum(counts.values()) for name, counts in OUTCOMES.items()}
    summary["server_errors"] = sum(n for key, n in OUTCOMES["api"].items() if key.startswith("5"))
    summary["leaks"] = OUTCOMES["decode"]["LEAK"] + OUTCOMES["api"]["LEAK"]
    Path(path).write_text(json.dumps(summary, indent=2))


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    write_report()


def left_behind(directory: Path) -> list[Path]:
    """Files in ``directory`` except torch's compile cache (``torchinductor_<user>``, made once by torch)."""
    return [path for path in directory.iterdir() if not path.name.startswith("torchinductor_")]


def check_waveform(waveform: Waveform) -> None:
    samples = waveform.samples
    assert samples.ndim == 1 and samples.dtype == np.float32 and samples.size > 0
    assert waveform.sample_rate == SAMPLE_RATE
    assert np.isfinite(samples).all() and np.abs(samples).max(initial=0) <= 1.0
    assert waveform.duration_s <= LIMITS.max_duration_s + 1.5


def test_decode_never_raises_anything_but_input_errors(seeds: dict[str, bytes], private_tmp: Path) -> None:
    @FUZZ_SETTINGS
    @given(fuzzed_uploads(seeds))
    def run(case: tuple[str, str, bytes]) -> None:
        description, filename, data = case
        try:
            check_waveform(decode_audio(data, filename=filename, limits=LIMITS))
            OUTCOMES["decode"]["ok"] += 1
        except InputError as error:
            OUTCOMES["decode"][error.error_code] += 1
        leftovers = left_behind(private_tmp)
        write_report(every=250)
        if leftovers:
            OUTCOMES["decode"]["LEAK"] += 1
            for leftover in leftovers:
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        assert not leftovers, f"{description}: left {leftovers}"

    run()


@pytest.fixture(scope="module")
def client(private_tmp: Path) -> Iterator[TestClient]:
    settings_ = Settings(max_upload_mb=2.0, max_duration_s=120.0, max_queued_jobs=64)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as test_client:
        yield test_client


def test_api_never_answers_5xx(seeds: dict[str, bytes], client: TestClient, private_tmp: Path) -> None:
    @settings(FUZZ_SETTINGS, max_examples=API_EXAMPLES)
    @given(fuzzed_uploads(seeds), st.booleans())
    def run(case: tuple[str, str, bytes], use_diarization: bool) -> None:
        description, filename, data = case
        response = client.post("/predict", files={"audio": (filename, data)},
                               data={"use_diarization": str(use_diarization).lower()})
        body = response.json()
        OUTCOMES["api"][f"{response.status_code} {body.get('error_code') or body.get('overall')}"] += 1
        assert response.status_code < 500, f"{description}: {response.status_code} {response.text[:300]}"
        if response.status_code == 200:
            assert body["overall"] in ("Real", "Fake", "No Speech") and 0 <= body["mean_probability"] <= 1
        else:
            assert body["error_code"] and body["message"]
        leftovers = left_behind(private_tmp)
        write_report(every=50)
        if leftovers:
            OUTCOMES["api"]["LEAK"] += 1
        assert not leftovers, f"{description}: left {leftovers}"

    run()
    assert client.get("/health").status_code == 200
