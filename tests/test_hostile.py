"""Hostile traffic through TestClient with the real models: broken and malicious uploads, malformed
requests, callers without keys or over their rate, floods, and server-side faults (no decoder,
no temp storage, no models) with recovery.

Every upload case must get a 4xx with an ``error_code`` (or a correct 200), never a 5xx; the server
must still answer /health afterwards, and the private upload directory must stay empty.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.core.config import Settings
from api.deps import get_detector
from api.errors import status_of
from api.limits import AdmissionGate, ServerBusyError, TokenBuckets
from api.main import create_app
from api.middleware import BodyLimitMiddleware
from api.runtime import ModelSlot
from soundsentry import audio
from soundsentry.detector import DEFAULT_DATA_DIR
from tests.conftest import ENCODINGS, SAMPLE_RATE, read_wav, run_ffmpeg, write_wav
from tests.hostile_corpus import float_wav

ACCEPTED_EXTENSIONS = (".wav", ".mp3", ".webm", ".ogg", ".opus", ".m4a", ".aac", ".flac")
CORRUPTIBLE_FORMATS = ("wav", "mp3", "webm", "ogg", "opus", "m4a", "m4a_faststart", "flac", "aac")
KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
HOSTILE_NAME = "../../etc/passwd;rm -rf ~.wav"


# ----------------------------------------------------------------------------- helpers


def pcm_wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, data_size: int | None = None) -> bytes:
    """16-bit PCM WAV; ``data_size`` overrides the size the data chunk claims (to lie about the length)."""
    frames = (np.clip(np.atleast_2d(samples), -1, 1).T * 32767).astype("<i2").tobytes()
    channels = np.atleast_2d(samples).shape[0]
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    claimed = len(frames) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", claimed) + frames
    riff_size = min(0xFFFFFFFF, 4 + len(body) - len(frames) + claimed)
    return b"RIFF" + struct.pack("<I", riff_size) + body


def over_spool_limit(speech: np.ndarray) -> bytes:
    """~1.4 MB WAV (speech, then 40 s of silence): over Starlette's 1 MiB in-memory spool, quick to analyse."""
    return pcm_wav_bytes(np.concatenate([speech, np.zeros(40 * SAMPLE_RATE, np.float32)]))


def ffmpeg_file(out: Path, *args: str) -> bytes:
    run_ffmpeg(*args, str(out))
    return out.read_bytes()


def assert_clean(response, *, allow_200: bool = True) -> None:
    """A 4xx with an error_code and a message, or (if allowed) a well-formed 200 report."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    if response.status_code == 200:
        assert allow_200, f"expected a 4xx, got 200: {response.text[:300]}"
        assert body["overall"] in ("Real", "Fake", "No Speech") and 0 <= body["mean_probability"] <= 1
    else:
        assert 400 <= response.status_code < 500
        assert body["error_code"] and len(body["message"]) > 20, body


def assert_error(response, status: int, error_code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error_code"] == error_code and len(body["message"]) > 20, body
    return body


def upload(client: TestClient, name: str, data: bytes, path: str = "/predict", **form) -> object:
    return client.post(path, files={"audio": (name, data)}, data=form or None)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spool_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def hostile_app(spool_root: Path):
    return create_app(Settings(max_upload_mb=8.0, max_duration_s=600.0, tmp_dir=spool_root, model_retry_s=0))


@pytest.fixture(scope="module")
def client(hostile_app) -> Iterator[TestClient]:
    with TestClient(hostile_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def checked(client: TestClient, hostile_app, spool_root: Path) -> Iterator[TestClient]:
    """The hostile client; afterwards /health must be 200 and the spool must hold nothing."""
    private_dir = hostile_app.state.spool.private_dir
    assert private_dir is not None and private_dir.parent == spool_root and tempfile.gettempdir() == str(private_dir)
    yield client
    assert client.get("/health").status_code == 200
    assert list(private_dir.iterdir()) == [], "temp files left behind"
    assert [p.name for p in spool_root.iterdir()] == [private_dir.name]


@pytest.fixture(scope="module")
def short_speech(audio_dir: Path, speech_wav: Path) -> Path:
    """~2.5 s of the test sentence (keeps the many 200 cases quick)."""
    out = audio_dir / "speech-2500ms.wav"
    run_ffmpeg("-i", str(speech_wav), "-t", "2.5", "-c:a", "pcm_s16le", str(out))
    return out


@pytest.fixture(scope="module")
def encoded(encode_as, short_speech: Path) -> dict[str, bytes]:
    return {fmt: encode_as(fmt, source=short_speech).read_bytes() for fmt in CORRUPTIBLE_FORMATS}


@pytest.fixture(scope="module")
def long_silence(audio_dir: Path) -> dict[str, bytes]:
    """3 h 05 min of silence, built cheaply: 60 s of 6 kb/s Opus, stream-copied 185 times (~3.8 MB).

    ``header``: the WEBM header states the duration. ``streamed``: written to a pipe, so the header
    understates it (says 60 s) and only decoding can tell.
    """
    minute = audio_dir / "minute-silence.webm"
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "60", "-c:a", "libopus", "-b:a", "6k",
               "-frame_duration", "60", "-f", "webm", str(minute))
    header = audio_dir / "three-hours.webm"
    run_ffmpeg("-stream_loop", "184", "-i", str(minute), "-c", "copy", "-f", "webm", str(header))
    streamed = audio_dir / "three-hours-streamed.webm"
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    import subprocess

    with streamed.open("wb") as handle:
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-stream_loop", "184", "-i", str(minute),
                        "-c", "copy", "-f", "webm", "pipe:1"], stdout=handle, check=True)
    return {"header": header.read_bytes(), "streamed": streamed.read_bytes()}


# ----------------------------------------------------------------------------- the hostile corpus


def test_empty_upload(checked: TestClient) -> None:
    assert_error(upload(checked, "empty.wav", b""), 400, "empty_file")


@pytest.mark.parametrize("extension", ACCEPTED_EXTENSIONS)
def test_random_bytes_with_every_extension(checked: TestClient, extension: str) -> None:
    noise = np.random.default_rng(len(extension)).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    assert_error(upload(checked, f"random{extension}", noise), 415, "unsupported_format")


@pytest.mark.parametrize("fmt", CORRUPTIBLE_FORMATS)
def test_truncated_and_corrupted_files(checked: TestClient, encoded: dict[str, bytes], fmt: str) -> None:
    data = encoded[fmt]
    rng = np.random.default_rng(7)
    middle = bytearray(data)
    start = len(data) // 3
    middle[start : start + len(data) // 5] = rng.integers(0, 256, len(data) // 5, dtype=np.uint8).tobytes()
    header_ff = bytearray(data)
    header_ff[4:64] = b"\xff" * 60
    header_zero = bytearray(data)
    header_zero[:32] = bytes(32)
    variants = {
        "first 16 bytes": data[:16],
        "first 200 bytes": data[:200],
        "first 40 %": data[: len(data) * 2 // 5],
        "no first 100 bytes": data[100:],
        "header 0xff": bytes(header_ff),
        "header zeroed": bytes(header_zero),
        "random middle": bytes(middle),
    }
    suffix = ENCODINGS[fmt][0]
    for name, variant in variants.items():
        response = upload(checked, f"{fmt}-{name}{suffix}", variant)
        assert response.status_code < 500, f"{fmt} {name}: {response.status_code} {response.text[:300]}"
        assert_clean(response)


def test_zero_length_audio(checked: TestClient, tmp_path: Path) -> None:
    assert_error(upload(checked, "no-samples.wav", pcm_wav_bytes(np.zeros(0, np.float32))), 415, "undecodable_audio")
    for fmt, args in {"mp3": ("-c:a", "libmp3lame"), "flac": ("-c:a", "flac"),
                      "ogg": ("-c:a", "libvorbis"), "webm": ("-c:a", "libopus", "-f", "webm")}.items():
        data = ffmpeg_file(tmp_path / f"empty.{fmt}", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "0",
                           *args)
        assert_clean(upload(checked, f"no-samples.{fmt}", data), allow_200=False)


def test_nan_and_inf_float_wav(checked: TestClient, short_speech: Path) -> None:
    speech, _ = read_wav(short_speech)
    poisoned = speech.copy()
    poisoned[::50] = np.nan
    poisoned[1::97] = np.inf
    poisoned[2::89] = -np.inf
    body = checked.post("/predict", files={"audio": ("nan.wav", float_wav(poisoned))}).json()
    assert body["overall"] in ("Real", "Fake") and np.isfinite(body["mean_probability"])
    all_nan = float_wav(np.full(SAMPLE_RATE * 2, np.nan, dtype=np.float32))
    assert checked.post("/predict", files={"audio": ("all-nan.wav", all_nan)}).json()["overall"] == "No Speech"
    loud = float_wav(np.full(SAMPLE_RATE * 2, 1e30, dtype=np.float32))
    assert_clean(upload(checked, "huge-values.wav", loud))


def test_eight_channels_and_192_khz(checked: TestClient, short_speech: Path, tmp_path: Path) -> None:
    speech, _ = read_wav(short_speech)
    eight = write_wav(tmp_path / "eight.wav", np.stack([speech] * 8))
    body = upload(checked, "eight.wav", eight.read_bytes()).json()
    assert body["overall"] in ("Real", "Fake") and body["duration_config"]["duration"] == pytest.approx(2.5, abs=0.1)
    eight_flac = ffmpeg_file(tmp_path / "eight.flac", "-i", str(eight), "-c:a", "flac")
    assert upload(checked, "eight.flac", eight_flac).json()["overall"] in ("Real", "Fake")
    fast = ffmpeg_file(tmp_path / "fast.wav", "-i", str(short_speech), "-ar", "192000", "-c:a", "pcm_s24le")
    body = upload(checked, "192k.wav", fast).json()
    assert body["overall"] in ("Real", "Fake") and body["duration_config"]["duration"] == pytest.approx(2.5, abs=0.1)


def test_tiny_files_that_claim_huge_durations(checked: TestClient, short_speech: Path) -> None:
    speech, _ = read_wav(short_speech)
    # 1 s of samples, a data chunk claiming ~4 GB (37 hours)
    lying = pcm_wav_bytes(speech[:SAMPLE_RATE], data_size=0xFFFFFFF0)
    assert_clean(upload(checked, "lying.wav", lying))
    # 2 s of samples at a claimed 1 Hz: 32 000 s of audio at 16 kHz after resampling
    assert_error(upload(checked, "one-hertz.wav", pcm_wav_bytes(speech[: 2 * SAMPLE_RATE], sample_rate=1)),
                 413, "audio_too_long")


def test_hostile_filenames(checked: TestClient, encoded: dict[str, bytes], spool_root: Path) -> None:
    body = upload(checked, HOSTILE_NAME, encoded["wav"]).json()
    assert body["overall"] in ("Real", "Fake") and body["filename"] == HOSTILE_NAME
    for name in ("", "é音声 \u202e.wav", "a" * 5000 + ".wav", "x\x00y.wav", "%s%n.mp3", "$(reboot).webm"):
        assert_clean(upload(checked, name, encoded["mp3"]))
    assert not (spool_root.parent / "etc").exists() and not Path("etc/passwd").exists()


def test_non_audio_with_audio_extensions(checked: TestClient) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    elf = Path(shutil.which("ls") or "/bin/ls").read_bytes()[:200_000]
    html = b"<!doctype html><html><body>" + b"<p>not audio</p>" * 500 + b"</body></html>"
    zip_bomb_like = b"PK\x03\x04" + bytes(10_000)
    for name, data in [("image.mp3", png), ("program.wav", elf), ("page.webm", html), ("archive.m4a", zip_bomb_like),
                       ("fake-id3.mp3", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + bytes(1000))]:
        assert_error(upload(checked, name, data), 415, "unsupported_format" if name != "fake-id3.mp3"
                     else "undecodable_audio")


def test_malformed_requests(checked: TestClient, encoded: dict[str, bytes]) -> None:
    assert_error(checked.post("/predict"), 422, "invalid_request")  # no body at all
    assert_error(checked.post("/predict", data={"use_diarization": "true"}), 422, "invalid_request")  # no file
    assert_error(checked.post("/predict", files={"file": ("a.wav", encoded["wav"])}), 422, "invalid_request")
    assert_error(checked.post("/predict", data={"audio": "not a file"}), 422, "invalid_request")
    assert_error(checked.post("/predict", content=encoded["wav"], headers={"Content-Type": "audio/wav"}),
                 422, "invalid_request")
    assert_error(checked.post("/predict", json={"audio": "AAAA"}), 422, "invalid_request")
    broken = b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n" + encoded["wav"]
    assert_clean(checked.post("/predict", content=broken, headers={"Content-Type": "multipart/form-data"}),
                 allow_200=False)  # no boundary
    closed_never = {"Content-Type": "multipart/form-data; boundary=xyz"}
    assert_clean(checked.post("/predict", content=broken, headers=closed_never), allow_200=False)
    assert_error(checked.post("/predict", content=b"x", headers={"Content-Length": "-5"}), 400, "invalid_request")
    assert_error(checked.get("/predict"), 405, "method_not_allowed")
    assert_error(checked.get("/../../etc/passwd"), 404, "not_found")
    many = [("files", (f"{i}.wav", b"RIFF")) for i in range(150)]  # over the multipart file limit
    assert_clean(checked.post("/batch-predict", files=many), allow_200=False)


def test_batch_of_hostile_files(checked: TestClient, encoded: dict[str, bytes]) -> None:
    files = [("files", ("ok.webm", encoded["webm"])), ("files", ("empty.wav", b"")),
             ("files", ("junk.mp3", b"\xff\xfb" + bytes(3000))), ("files", (HOSTILE_NAME, encoded["flac"]))]
    body = checked.post("/batch-predict", files=files).json()
    assert (body["total_files"], body["successful"], body["failed"]) == (4, 2, 2)
    assert [r["error_code"] for r in body["results"] if r["status"] == "error"] == ["empty_file", "unsupported_format"]


def test_long_audio_against_the_duration_limit(checked: TestClient, long_silence: dict[str, bytes]) -> None:
    start = time.monotonic()
    for kind, data in long_silence.items():
        body = assert_error(upload(checked, f"three-hours-{kind}.webm", data), 413, "audio_too_long")
        assert "600 s limit" in body["message"]
    assert time.monotonic() - start < 20


def test_three_hours_at_default_limits(long_silence: dict[str, bytes]) -> None:
    """3 h 05 min with the default 3 h limit: rejected from the header, quickly, without decoding it."""
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as default_client:
        start = time.monotonic()
        body = assert_error(upload(default_client, "three-hours.webm", long_silence["header"]), 413, "audio_too_long")
        assert "claims to last" in body["message"] and time.monotonic() - start < 10
        assert default_client.get("/health").status_code == 200


def test_uploads_over_the_size_limit(checked: TestClient, hostile_app) -> None:
    too_big = b"RIFF" + bytes(9 * 1024 * 1024)
    body = assert_error(upload(checked, "big.wav", too_big), 413, "file_too_large")
    assert "8 MiB" in body["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, cut off while streaming
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n\r\n'
        for _ in range(20):
            yield bytes(512 * 1024)
        yield b"\r\n" + boundary + b"--\r\n"

    response = checked.post("/predict", content=chunks(),
                            headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert_error(response, 413, "file_too_large")
    assert_error(checked.post("/info", content=bytes(100_000)), 413, "file_too_large")


def test_uploads_and_keys_are_never_logged(checked: TestClient, caplog: pytest.LogCaptureFixture,
                                           short_speech: Path) -> None:
    marker = b"SECRET-AUDIO-MARKER-31337"
    speech, _ = read_wav(short_speech)
    wav = pcm_wav_bytes(speech)
    tagged = wav[:12] + b"LIST" + struct.pack("<I", len(marker)) + marker + wav[12:]
    with caplog.at_level(logging.DEBUG):
        upload(checked, "tagged.wav", tagged)
        upload(checked, "junk.wav", marker * 1000)
        upload(checked, "junk.m4a", b"\x00\x00\x00\x20ftypM4A " + marker * 1000)
    assert marker.decode() not in caplog.text


# ----------------------------------------------------------------------------- who may call


def test_api_keys(encoded: dict[str, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# operators\n{OTHER_KEY}\n\n")
    settings = Settings(api_keys=KEY, api_keys_file=keys_file)
    with TestClient(create_app(settings)) as client, caplog.at_level(logging.DEBUG):
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
        assert client.get("/docs").status_code == 200
        missing = assert_error(upload(client, "a.webm", encoded["webm"]), 401, "unauthorized")
        assert "X-API-Key" in missing["message"]
        assert client.post("/predict").headers["www-authenticate"].startswith("ApiKey")
        wrong = client.post("/predict", files={"audio": ("a.webm", encoded["webm"])}, headers={"X-API-Key": "nope"})
        assert "not valid" in assert_error(wrong, 401, "unauthorized")["message"]
        assert_error(client.get("/info"), 401, "unauthorized")
        for key in (KEY, OTHER_KEY):
            response = client.post("/predict", files={"audio": ("a.webm", encoded["webm"])}, headers={"X-API-Key": key})
            assert response.status_code == 200, response.text
        assert client.get("/info", headers={"X-API-Key": KEY}).status_code == 200
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text and "nope" not in caplog.text


def test_api_key_settings_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        Settings(api_keys="short")
    with pytest.raises(ValueError, match="cannot be read"):
        Settings(api_keys_file=tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no keys"):
        Settings(api_keys_file=tmp_path / "empty.txt")


def test_env_lists_and_cors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSENTRY_API_KEYS", f"{KEY}, {OTHER_KEY}")
    monkeypatch.setenv("SOUNDSENTRY_CORS_ORIGINS", "https://app.example.com,https://admin.example.com")
    settings = Settings()
    assert settings.api_keys == [KEY, OTHER_KEY]
    assert settings.cors_origins == ["https://app.example.com", "https://admin.example.com"]
    with TestClient(create_app(settings)) as client:
        allowed = client.options("/predict", headers={"Origin": "https://app.example.com",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "x-api-key"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        extension = "moz-extension://0123-4567"
        refused = client.post("/predict", headers={"Origin": extension})  # 401, readable by the extension
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == extension
        other = client.options("/predict", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_rate_limit_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(api_keys=[KEY, OTHER_KEY], rate_limit_per_minute=2, rate_limit_burst=2)
    with TestClient(create_app(settings)) as client:
        mine, theirs = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
        assert [client.get("/info", headers=mine).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/info", headers=mine)
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert client.get("/info", headers=theirs).status_code == 200  # another key, another bucket
        assert all(client.get("/health").status_code == 200 for _ in range(10))  # never limited
        # guessing keys is limited per IP
        guesses = [client.get("/info", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(4)]
        assert guesses[:2] == [401, 401] and guesses[2:] == [429, 429]


# ----------------------------------------------------------------------------- capacity


def test_busy_server_answers_503_at_once(encoded: dict[str, bytes]) -> None:
    settings = Settings(max_concurrent_jobs=1, max_queued_jobs=0, busy_retry_after_s=3)
    with TestClient(create_app(settings)) as client:
        gate = client.app.state.gate
        with gate.slot():
            start = time.monotonic()
            response = upload(client, "a.webm", encoded["webm"])
            assert time.monotonic() - start < 2
            assert_error(response, 503, "server_busy")
            assert response.headers["retry-after"] == "3"
            assert client.get("/health").status_code == 200
        assert upload(client, "a.webm", encoded["webm"]).status_code == 200


def test_queued_request_gives_up_after_the_queue_timeout(encoded: dict[str, bytes]) -> None:
    settings = Settings(max_concurrent_jobs=1, max_queued_jobs=1, queue_timeout_s=0.3)
    with TestClient(create_app(settings)) as client:
        with client.app.state.gate.slot():
            response = upload(client, "a.webm", encoded["webm"])  # admitted to the queue, never served
        body = assert_error(response, 503, "server_busy")
        assert "within 0.3 s" in body["message"]
        assert client.app.state.gate.stats()["waiting"] == 0


def test_flood_gets_200_or_503_never_a_hang(encoded: dict[str, bytes]) -> None:
    settings = Settings(max_concurrent_jobs=1, max_queued_jobs=1, queue_timeout_s=30)
    app = create_app(settings)
    with TestClient(app) as client:
        real = app.state.models.detector
        release = threading.Event()

        class SlowDetector:
            def predict_bytes(self, *args, **kwargs):
                release.wait(10)
                return real.predict_bytes(*args, **kwargs)

        app.dependency_overrides[get_detector] = lambda: SlowDetector()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(upload, client, f"{i}.webm", encoded["webm"]) for i in range(8)]
            deadline = time.monotonic() + 10
            while sum(f.done() for f in futures) < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sum(f.done() for f in futures) == 6, "the refused requests should be answered at once"
            release.set()
            statuses = sorted(f.result(timeout=30).status_code for f in futures)
        assert statuses == [200, 200] + [503] * 6
        assert app.state.gate.stats()["running"] == 0 and app.state.gate.rejected == 6


def test_detections_run_on_the_gates_own_threads_however_many_requests_wait() -> None:
    gate = AdmissionGate(max_running=2, max_waiting=16, wait_timeout_s=30)

    def detect(i: int) -> str:
        time.sleep(0.01)
        return threading.current_thread().name

    def request(i: int) -> str:
        with gate.slot():
            return gate.run(detect, i)

    with ThreadPoolExecutor(18) as pool:  # as FastAPI's thread pool would call it
        names = set(pool.map(request, range(60)))
    assert len(names) <= 2 and all(name.startswith("detection") for name in names)

    def fails() -> None:
        raise ValueError("exceptions pass through")

    with gate.slot(), pytest.raises(ValueError, match="exceptions pass through"):
        gate.run(fails)
    assert gate.stats()["running"] == 0


def test_token_buckets_refill_and_forget() -> None:
    now = [100.0]
    buckets = TokenBuckets(per_minute=60, burst=3, max_clients=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)
    now[0] += 0.5
    assert buckets.take("a") == pytest.approx(0.5)  # refused requests spend nothing
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    buckets.take("b")
    buckets.take("c")  # over max_clients: "a", the least recently seen, is forgotten
    assert "a" not in buckets._buckets and len(buckets._buckets) == 2
    assert TokenBuckets.retry_after(0.2) == 1 and TokenBuckets.retry_after(2.01) == 3


def test_admission_gate_counts_and_releases() -> None:
    gate = AdmissionGate(max_running=1, max_waiting=1, wait_timeout_s=0.05, retry_after_s=2)
    with pytest.raises(RuntimeError), gate.slot():
        raise RuntimeError("a failing job still frees its slot")
    assert gate.stats() == {"running": 0, "waiting": 0, "max_running": 1, "max_waiting": 1, "rejected": 0,
                            "abandoned": 0}
    with gate.slot():
        with pytest.raises(ServerBusyError, match="within 0.05 s") as waited:
            with gate.slot():
                pass
        assert waited.value.retry_after_s == 2 and status_of(waited.value) == 503
    assert gate.stats()["rejected"] == 1 and not gate.saturated
    with pytest.raises(ValueError):
        AdmissionGate(max_running=0, max_waiting=1, wait_timeout_s=1)


def test_content_length_is_refused_before_the_body_is_read() -> None:
    import asyncio

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    async def receive():  # pragma: no cover - must not be reached
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    middleware = BodyLimitMiddleware(app, limit_for=lambda path: 1000, upload_limit_bytes=900)
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"5000")],
             "query_string": b"", "root_path": ""}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 413 and b"file_too_large" in sent[1]["body"]


# ----------------------------------------------------------------------------- server faults and recovery


def test_missing_and_corrupt_models_then_recovery(tmp_path: Path, encoded: dict[str, bytes]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with TestClient(create_app(Settings(data_dir=data_dir, model_retry_s=0))) as client:
        health = client.get("/health")
        assert health.status_code == 503 and "missing" in health.json()["detail"]
        assert health.headers["retry-after"]
        assert_error(upload(client, "a.webm", encoded["webm"]), 503, "model_not_loaded")
        for name in ("feature_scaler.pkl", "trained_model.pth"):
            (data_dir / name).write_bytes(b"not a model")
        corrupt = client.get("/health")
        assert corrupt.status_code == 503 and "Cannot read" in corrupt.json()["detail"]
        for name in ("feature_scaler.pkl", "trained_model.pth"):
            shutil.copy(DEFAULT_DATA_DIR / name, data_dir / name)
        assert client.get("/health").json()["status"] == "ok"  # recovered without a restart
        assert upload(client, "a.webm", encoded["webm"]).status_code == 200


def test_unexpected_load_failure_keeps_the_service_up() -> None:
    calls = []

    def loader():
        calls.append(1)
        raise ValueError("thresholds missing for duration categories ['normal']")

    now = [0.0]
    slot = ModelSlot(loader, retry_s=10, clock=lambda: now[0])
    assert slot.load() is None and "ValueError: thresholds missing" in slot.reason
    assert slot.get() is None and len(calls) == 1  # not due yet
    now[0] = 10.0
    assert slot.get() is None and len(calls) == 2


def test_model_retry_is_throttled(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path, model_retry_s=3600))) as client:
        models = client.app.state.models
        attempt = models._last_attempt
        assert client.get("/health").status_code == 503
        assert models._last_attempt == attempt  # no new attempt within the hour


def test_no_ffmpeg_then_no_decoder_at_all(monkeypatch: pytest.MonkeyPatch, encoded: dict[str, bytes]) -> None:
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as client:
        real_which = shutil.which
        monkeypatch.setattr(audio.shutil, "which", lambda name, *a, **k: None if name == "ffmpeg" else real_which(name))
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "ffmpeg" in health["detail"] and health["decoders"] == ["pyav"]
        assert upload(client, "a.webm", encoded["webm"]).status_code == 200  # PyAV alone
        assert_clean(upload(client, "cut.m4a", encoded["m4a"][:300]), allow_200=False)
        monkeypatch.setattr(audio, "_pyav", lambda: None)
        assert client.get("/health").status_code == 503
        assert_error(upload(client, "a.webm", encoded["webm"]), 503, "decoder_unavailable")
        monkeypatch.undo()
        assert client.get("/health").json()["status"] == "ok"
        assert upload(client, "a.webm", encoded["webm"]).status_code == 200


def test_unwritable_temp_storage_then_recovery(monkeypatch: pytest.MonkeyPatch, short_speech: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    speech, _ = read_wav(short_speech)
    big = over_spool_limit(speech)
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as client:
        monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/soundsentry-spool")
        with caplog.at_level(logging.ERROR):
            response = upload(client, "big.wav", big)
        assert_error(response, 503, "storage_unavailable")
        assert "cannot spool the upload" in caplog.text
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "over 1 MiB" in health["detail"]
        assert upload(client, "small.wav", pcm_wav_bytes(speech)).status_code == 200  # small uploads still work
        monkeypatch.undo()
        assert upload(client, "big.wav", big).status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_private_spool_dir_is_remade_if_removed(tmp_path: Path, short_speech: Path) -> None:
    speech, _ = read_wav(short_speech)
    big = over_spool_limit(speech)
    root = tmp_path / "spool"
    previous = tempfile.tempdir
    with TestClient(create_app(Settings(tmp_dir=root)), raise_server_exceptions=False) as client:
        private = client.app.state.spool.private_dir
        assert private.stat().st_mode & 0o777 == 0o700 and tempfile.gettempdir() == str(private)
        shutil.rmtree(private)
        assert_error(upload(client, "big.wav", big), 503, "storage_unavailable")
        assert upload(client, "big.wav", big).status_code == 200  # the directory was made again
    assert tempfile.tempdir == previous and list(root.iterdir()) == []


def test_wave_module_reads_what_we_write(tmp_path: Path) -> None:
    """The hand-written PCM WAV helper above is a valid WAV (guards the corpus itself)."""
    path = tmp_path / "check.wav"
    path.write_bytes(pcm_wav_bytes(np.zeros(1600, np.float32)))
    with wave.open(str(path)) as reader:
        assert (reader.getnchannels(), reader.getframerate(), reader.getnframes()) == (1, SAMPLE_RATE, 1600)
