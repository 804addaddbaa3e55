"""Streams of chunks (POST /sessions ...): the real models on espeak-ng voices, in-process and in a real
redis-server (Debian's, started here on a free port) shared by two app replicas."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.core.config import Settings
from api.main import create_app
from soundsentry.errors import SessionNotFoundError
from soundsentry.sessions import (
    PRIOR_SD,
    MemorySessionStore,
    RedisSessionStore,
    Session,
    SessionSpeaker,
    evidence_confidence,
)
from tests.conftest import run_ffmpeg, speak

VOICES = {
    "low": ("en-us+m3", 30, "Good morning, could we talk about the schedule for next week before lunch?"),
    "high": ("en-us+f4", 80, "Of course, I think Tuesday afternoon works well for me and for the whole team."),
}


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """4 s WEBM/Opus chunks as the extension sends them: one per voice, and one of silence."""
    folder = tmp_path_factory.mktemp("chunks")
    out = {}
    for name, (voice, pitch, text) in VOICES.items():
        wav = speak(text, folder / f"{name}.wav", voice=voice, pitch=pitch)
        run_ffmpeg("-i", str(wav), "-t", "4", "-c:a", "libopus", "-b:a", "32k", str(folder / f"{name}.webm"))
        out[name] = (folder / f"{name}.webm").read_bytes()
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "4", "-c:a", "libopus",
               str(folder / "quiet.webm"))
    out["quiet"] = (folder / "quiet.webm").read_bytes()
    return out


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_upload_mb=2.0))) as test_client:
        yield test_client


def post_chunk(client: TestClient, session_id: str, data: bytes, **form) -> object:
    return client.post(f"/sessions/{session_id}/chunks", files={"audio": ("audio-chunk.webm", data, "audio/webm")},
                       data={k: str(v).lower() for k, v in form.items()})


def new_session(client: TestClient) -> str:
    answer = client.post("/sessions")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["expires_in_s"] == 900
    return body["session_id"]


def test_a_stream_of_chunks_is_judged_per_speaker(client: TestClient, chunks: dict[str, bytes]) -> None:
    session_id = new_session(client)
    order = ["low", "high", "low", "low", "high"]
    answers = []
    for index, name in enumerate(order):
        answer = post_chunk(client, session_id, chunks[name])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        answers.append(body)
        assert body["chunk_index"] == index and body["session"]["chunks"] == index + 1
        assert body["chunk"]["overall"] in ("Real", "Fake")  # the chunk's own report, as /predict gives it
        assert set(body["chunk"]) >= {"details", "speakers", "timings_ms", "mean_probability"}
        assert "speaker_embedding" in body["chunk"]["timings_ms"]
    # the two voices become two session speakers, and each chunk is linked to its own voice's
    links = [body["session"]["chunk_speakers"]["SPEAKER_00"] for body in answers]
    assert links[0] != links[1] and links[2] == links[3] == links[0] and links[4] == links[1]
    final = answers[-1]["session"]
    heard = {s["speaker"]: s for s in final["speakers"]}
    assert heard[links[0]]["chunks"] == 3 and heard[links[1]]["chunks"] == 2
    # evidence adds up: speech over all chunks, a speaker's own P(fake) is the mean of its chunks'
    assert final["speech_duration"] == pytest.approx(sum(b["chunk"]["duration_config"]["speech_duration"]
                                                         for b in answers), abs=0.05)
    low_chunks = [b["chunk"]["mean_probability"] for b, name in zip(answers, order, strict=True) if name == "low"]
    assert heard[links[0]]["own_probability"] == pytest.approx(np.mean(low_chunks), abs=0.01)
    assert final["overall"] in ("Real", "Fake") and 0.0 <= final["confidence"] <= 1.0
    # the same stream read back
    again = client.get(f"/sessions/{session_id}").json()
    assert again["chunks"] == 5 and again["speakers"] == final["speakers"]
    assert "soundsentry_sessions_open " in client.get("/metrics").text
    assert client.delete(f"/sessions/{session_id}").status_code == 204
    gone = client.get(f"/sessions/{session_id}")
    assert gone.status_code == 404 and gone.json()["error_code"] == "session_not_found"


def test_confidence_grows_as_a_steady_speaker_is_heard_again(client: TestClient, chunks: dict[str, bytes]) -> None:
    session_id = new_session(client)
    confidences = [post_chunk(client, session_id, chunks["high"]).json()["session"]["speakers"][0]["confidence"]
                   for _ in range(4)]
    # (rounded to 4 decimals, so it may reach 1.0 and stay there)
    assert all(later >= earlier for earlier, later in zip(confidences, confidences[1:], strict=False)), confidences
    assert confidences[-1] > confidences[0], confidences


def test_silence_and_bad_chunks(client: TestClient, chunks: dict[str, bytes]) -> None:
    session_id = new_session(client)
    quiet = post_chunk(client, session_id, chunks["quiet"]).json()
    assert quiet["chunk"]["overall"] == "No Speech"
    assert quiet["session"]["overall"] == "No Speech" and quiet["session"]["speakers"] == []
    assert quiet["session"]["chunk_speakers"] == {}
    broken = post_chunk(client, session_id, b"this is not audio at all")
    assert broken.status_code == 415 and broken.json()["error_code"] == "unsupported_format"
    assert client.get(f"/sessions/{session_id}").json()["chunks"] == 1  # a refused chunk is not counted
    for unknown in ("A" * 24, "x", "bad~id*"):
        answer = post_chunk(client, unknown, chunks["low"])
        assert answer.status_code == 404 and answer.json()["error_code"] == "session_not_found"
        assert "POST /sessions" in answer.json()["message"]
    assert client.delete("/sessions/" + "B" * 24).status_code == 404
    missing = client.post(f"/sessions/{session_id}/chunks")
    assert missing.status_code == 422 and missing.json()["error_code"] == "invalid_request"


def test_the_memory_store_expires_and_is_bounded() -> None:
    now = [0.0]
    store = MemorySessionStore(ttl_s=10.0, max_sessions=3, clock=lambda: now[0])
    first, second = store.create(), store.create()
    now[0] = 5.0
    store.update(first.session_id, lambda s: setattr(s, "chunks", 1))  # a chunk keeps it alive
    now[0] = 12.0
    with pytest.raises(SessionNotFoundError):
        store.get(second.session_id)  # idle past the TTL
    assert store.get(first.session_id).chunks == 1 and store.count() == 1
    extra = [store.create() for _ in range(3)]  # past max_sessions: the least recently used goes
    assert store.count() == 3 and store.evicted == 1
    with pytest.raises(SessionNotFoundError):
        store.get(first.session_id)
    copy = store.get(extra[0].session_id)
    copy.chunks = 99  # what a caller holds is a copy
    assert store.get(extra[0].session_id).chunks == 0


def test_evidence_confidence() -> None:
    assert evidence_confidence(0.5, 0.5, PRIOR_SD, 1) == 0.0
    one = evidence_confidence(0.8, 0.5, PRIOR_SD, 1)
    assert 0 < one < evidence_confidence(0.8, 0.5, PRIOR_SD, 4) < 1
    assert evidence_confidence(0.8, 0.5, 3.0, 4) < evidence_confidence(0.8, 0.5, 0.5, 4)  # disagreeing chunks
    speaker = SessionSpeaker("S1", None, chunks=1, logit_sum=2.0, logit_squares=4.0)
    assert speaker.chunk_logit_sd == pytest.approx(PRIOR_SD)  # one chunk: the prior alone
    speaker = SessionSpeaker("S1", np.ones(4, np.float32) / 2, speech=3.0, weighted=1.5, chunks=3)
    assert Session.from_json(Session("x", 1.0, 2.0, 3, [speaker]).to_json()).speakers[0].centroid.tolist() == [0.5] * 4


# --------------------------------------------------------------------------------------------
# Redis: two replicas, one store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    program = shutil.which("redis-server")
    if program is None:
        pytest.skip("redis-server is not installed (make setup-dev installs Debian's redis-server)")
    port = free_port()
    folder: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        store = RedisSessionStore(url)
        for _ in range(100):
            try:
                store.client.ping()
                break
            except Exception:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_replicas_share_sessions_through_redis(redis_url: str, chunks: dict[str, bytes]) -> None:
    settings = Settings(max_upload_mb=2.0, redis_url=redis_url)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        session_id = new_session(one)
        assert post_chunk(two, session_id, chunks["low"]).json()["session"]["chunks"] == 1
        answer = post_chunk(one, session_id, chunks["high"]).json()
        assert answer["chunk_index"] == 1 and len(answer["session"]["speakers"]) == 2
        assert two.get(f"/sessions/{session_id}").json()["speakers"] == answer["session"]["speakers"]
        assert two.delete(f"/sessions/{session_id}").status_code == 204
        assert one.get(f"/sessions/{session_id}").status_code == 404


def test_redis_updates_are_atomic_and_expire(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, ttl_s=1.0)
    session = store.create()

    def count_many() -> None:
        for _ in range(25):
            store.update(session.session_id, lambda s: setattr(s, "chunks", s.chunks + 1))

    workers = [threading.Thread(target=count_many) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert store.get(session.session_id).chunks == 100  # no update lost between concurrent writers
    assert store.client.ttl(store.prefix + session.session_id) >= 0
    time.sleep(2.1)
    with pytest.raises(SessionNotFoundError):
        store.get(session.session_id)


def test_an_unreachable_redis_is_a_503(chunks: dict[str, bytes]) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with TestClient(create_app(settings)) as client:
        answer = client.post("/sessions")
        assert answer.status_code == 503 and answer.json()["error_code"] == "session_store_unavailable"
        assert answer.headers["Retry-After"]


# --------------------------------------------------------------------------------------------
# the stream evaluation (scripts.evaluate_sessions)


def test_streams_are_cut_from_each_group_in_order(tmp_path: Path) -> None:
    from soundsentry.datasets import AudioItem
    from soundsentry.evaluation.evaluate_sessions import build_streams
    from tests.conftest import write_wav

    tone = np.sin(np.arange(16000 * 9) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    items = [AudioItem(write_wav(tmp_path / f"{name}.wav", tone), label, "demo")
             for name, label in (("r1", 0), ("r2", 0), ("f1", 1))]
    streams = list(build_streams(items, chunks_per_stream=4))  # 18 s of reals: one 16 s stream; 9 s of fakes: none
    assert [(s.name, s.label, len(s.chunks)) for s in streams] == [("demo/real#0", 0, 4)]
    assert all(chunk.size == 4 * 16000 for chunk in streams[0].chunks)


def test_the_stream_summary_counts_what_it_should() -> None:
    from soundsentry.evaluation.evaluate_sessions import summarise_rows

    rows = []
    for stream in range(8):
        label = stream % 2
        for chunk in range(3):  # the chunks overlap across classes; each session's mean does not
            noisy = 0.2 + 0.6 * ((stream + chunk) % 3 == 0)
            session = 0.3 + 0.4 * label
            rows.append({"stream": f"s{stream}", "label": label, "source": "x", "chunk": chunk,
                         "chunk_overall": "Fake" if noisy > 0.5 else "Real", "chunk_probability": noisy,
                         "session_overall": "Fake" if session > 0.5 else "Real", "session_probability": session,
                         "session_overall_alone": "Real",
                         "session_speakers": 1, "session_confidence": 0.5, "ms": 10.0})
    summary = summarise_rows(rows, resamples=50)
    assert summary["streams"] == {"real": 4, "fake": 4, "chunks_per_stream": 3}
    assert summary["eer"]["session_3"]["eer"] == 0.0 and summary["eer"]["chunk"]["eer"] > 0.3
    assert summary["at_served_thresholds"]["sessions"]["fakes_called_real"]["rate"] == 0.0
    assert summary["eer"]["session_3"]["minus_chunk"]["difference"] < 0
