"""Every endpoint through FastAPI's TestClient, with the real models (lifespan runs)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.core.config import Settings
from api.main import create_app

FORMATS = ["wav", "mp3", "webm", "ogg", "opus", "m4a", "m4a_faststart", "flac", "aac"]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_upload_mb=2.0))) as test_client:
        yield test_client


def post_file(client: TestClient, path: Path, name: str | None = None, **form) -> object:
    with path.open("rb") as handle:
        return client.post("/predict", files={"audio": (name or path.name, handle)}, data=form)


def assert_error(response, status: int, error_code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == error_code and len(body["message"]) > 20


def test_root_health_info(client: TestClient) -> None:
    assert client.get("/").json()["service"] == "Sound Sentry"
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["models_loaded"] is True
    info = client.get("/info").json()
    assert set(info["thresholds"]) == {"very_short", "short", "normal"}
    assert info["limits"]["max_batch_files"] == 10 and "pyav" in info["decoders"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_every_format(client: TestClient, encode_as, fmt: str) -> None:
    response = post_file(client, encode_as(fmt))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overall"] in ("Real", "Fake")
    assert (body["zone"] == "fake") == (body["overall"] == "Fake") and body["zone"] in ("real", "uncertain", "fake")
    assert 0 <= body["mean_probability"] <= 1
    assert body["details"] and body["speakers"][0]["speaker"] == "SPEAKER_00"
    assert body["duration_config"]["use_diarization"] is False
    assert body["duration_config"]["duration"] == pytest.approx(5.0, abs=1.5)
    assert body["processing_time_ms"] > 0


def test_browser_chunk_named_by_the_extension(client: TestClient, encode_as) -> None:
    chunk = encode_as("webm", extra_args=("-t", "4"))
    body = post_file(client, chunk, name="audio-chunk.webm").json()
    assert body["overall"] in ("Real", "Fake")
    assert body["duration_config"]["duration"] == pytest.approx(4.0, abs=0.1)
    assert body["duration_config"]["category"] in ("very_short", "short")  # by scored speech, < 4 s


def test_content_is_sniffed_not_the_extension(client: TestClient, encode_as) -> None:
    assert post_file(client, encode_as("mp3"), name="actually-mp3.wav").status_code == 200


def test_silence_is_no_speech(client: TestClient, silence_wav: Path) -> None:
    body = post_file(client, silence_wav).json()
    assert body["overall"] == "No Speech" and body["details"] == [] and body["message"] and body.get("zone") is None


def test_two_speakers_with_diarization(client: TestClient, two_speaker_wav: Path) -> None:
    body = post_file(client, two_speaker_wav, use_diarization="true").json()
    assert body["duration_config"]["use_diarization"] is True
    assert len(body["speakers"]) == 2
    without = post_file(client, two_speaker_wav).json()
    assert len(without["speakers"]) == 1 and without["rttm"] is None


def test_predict_command_writes_rttm(two_speaker_wav: Path, capsys) -> None:
    from soundsentry.cli import predict_main

    assert predict_main([str(two_speaker_wav), "--use-diarization", "--rttm"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len({f[7] for f in lines}) == 2 and all(f[:3] == ["SPEAKER", two_speaker_wav.stem, "1"] for f in lines)


def test_speaker_turns_as_rttm(client: TestClient, two_speaker_wav: Path) -> None:
    """rttm=true answers the turns in RTTM that pyannote reads back into the same speakers and times."""
    from pyannote.core import Annotation, Segment

    body = post_file(client, two_speaker_wav, name="two voices.wav", use_diarization="true", rttm="true").json()
    lines = [line.split() for line in body["rttm"].splitlines()]
    assert lines and all(len(f) == 10 and f[0] == "SPEAKER" and f[1] == "two_voices" and f[2] == "1" for f in lines)
    annotation = Annotation(uri="two_voices")
    for fields in lines:
        start, duration = float(fields[3]), float(fields[4])
        assert duration > 0
        annotation[Segment(start, start + duration)] = fields[7]
    assert set(annotation.labels()) == {s["speaker"] for s in body["speakers"]}
    for label in annotation.labels():
        scored = sum(d["end"] - d["start"] for d in body["details"] if d["speaker"] == label)
        assert annotation.label_duration(label) == pytest.approx(scored, abs=0.01)
    # turns, not scoring pieces: no two lines of one speaker touch
    turns = sorted((float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in lines)
    assert all(not (a[2] == b[2] and abs(b[0] - a[1]) < 1e-3) for a, b in zip(turns, turns[1:], strict=False))


def test_bad_uploads_get_clear_4xx(client: TestClient, tmp_path: Path, encode_as) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_error(post_file(client, empty), 400, "empty_file")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(bytes(range(256)) * 40)
    assert_error(post_file(client, garbage), 415, "unsupported_format")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 50)
    assert_error(post_file(client, text), 415, "unsupported_format")  # the name says mp3, the bytes do not
    truncated = tmp_path / "truncated.m4a"
    truncated.write_bytes(encode_as("m4a").read_bytes()[:300])
    assert_error(post_file(client, truncated), 415, "undecodable_audio")
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\0" * (3 * 1024 * 1024))
    assert_error(post_file(client, big), 413, "file_too_large")


def test_malformed_requests(client: TestClient, speech_wav: Path) -> None:
    assert_error(client.post("/predict"), 422, "invalid_request")
    with speech_wav.open("rb") as handle:
        assert_error(client.post("/predict", files={"file": ("a.wav", handle)}), 422, "invalid_request")
    with speech_wav.open("rb") as handle:
        response = client.post("/predict", files={"audio": ("a.wav", handle)}, data={"use_diarization": "perhaps"})
    assert_error(response, 422, "invalid_request")
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_batch_one_bad_file_does_not_fail_the_others(client: TestClient, encode_as, tmp_path: Path) -> None:
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 100)
    paths = [encode_as("wav"), bad, encode_as("webm")]
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    body = client.post("/batch-predict", files=files).json()
    assert (body["total_files"], body["successful"], body["failed"]) == (3, 2, 1)
    assert [r["status"] for r in body["results"]] == ["success", "error", "success"]
    assert body["results"][1]["error_code"] == "undecodable_audio"
    too_many = [("files", (f"{i}.wav", encode_as("wav").read_bytes())) for i in range(11)]
    assert_error(client.post("/batch-predict", files=too_many), 400, "too_many_files")


def test_cors_allows_browser_extensions(client: TestClient) -> None:
    origin = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    response = client.options("/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in (origin, "*")


def test_no_temp_files_left_behind(client: TestClient, encode_as, tmp_path: Path, monkeypatch) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    garbage = tmp_path / "garbage.m4a"
    garbage.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x01" * 2_000_000)  # large enough to spool to disk
    post_file(client, garbage)
    post_file(client, encode_as("m4a"))
    assert list(spool.iterdir()) == []


def test_unloadable_models_give_503(tmp_path: Path, speech_wav: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as broken:
        health = broken.get("/health")
        assert health.status_code == 503 and "missing" in health.json()["detail"]
        assert_error(post_file(broken, speech_wav), 503, "model_not_loaded")


# An absolute path of two parts or more, as a server directory would appear ("/health" is one part).
SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/\"',;:()]+/)+[^\s/\"',;:()]*")


def test_no_server_paths_are_shown(client: TestClient, speech_wav: Path, tmp_path: Path) -> None:
    """/health, /info and reports name models and versions, never where they lie on the server;
    the 503 of a server without models says what is missing, not where it looked."""
    shown = [client.get("/health").text, client.get("/info").text,
             post_file(client, speech_wav, use_diarization="true").text]
    with TestClient(create_app(Settings(data_dir=tmp_path / "models"))) as broken:
        shown += [broken.get("/health").text, post_file(broken, speech_wav).text]
    for text in shown:
        assert SERVER_PATH.findall(text) == [], text[:400]
    assert "missing" in shown[3] and str(tmp_path) not in shown[3] + shown[4]


def test_telephone_audio_is_answered_with_its_band_and_a_warning(client: TestClient, encode_as) -> None:
    body = post_file(client, encode_as("wav", extra_args=("-ar", "8000", "-c:a", "pcm_alaw")), name="call.wav").json()
    assert body["audio"]["band_limited"] is True and body["audio"]["band_edge_hz"] < 4500
    assert "unreliable" in body["message"]
