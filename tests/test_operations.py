"""What operators see: Prometheus metrics at /metrics, request ids, and one JSON access line per request.

Through FastAPI's TestClient with the real models (lifespan runs), as tests/test_api.py builds it, and
once through the real launcher (``python -m api.server``, without models) for the logging set-up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.core.config import Settings
from api.main import create_app
from api.observability import ACCESS_LOGGER, MAX_REQUEST_ID_CHARS

REPO = Path(__file__).resolve().parent.parent
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
SECRET_NAME = "private-meeting-of-alice.wav"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_upload_mb=2.0))) as test_client:
        yield test_client


def post_file(client: TestClient, path: Path, name: str | None = None, headers: dict | None = None, **form):
    with path.open("rb") as handle:
        return client.post("/predict", files={"audio": (name or path.name, handle)}, data=form, headers=headers)


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus_client's own parser: {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


def line_of(caplog: pytest.LogCaptureFixture, request_id: str) -> dict:
    (line,) = [line for line in access_lines(caplog) if line["request_id"] == request_id]
    return line


# ----------------------------------------------------------------------------- metrics


def test_metrics_move_with_a_real_prediction(client: TestClient, speech_wav: Path) -> None:
    before = scrape(client)
    response = post_file(client, speech_wav)
    assert response.status_code == 200, response.text
    report = response.json()
    after = scrape(client)

    labels = {"method": "POST", "route": "/predict", "status": "200"}
    assert value(after, "soundsentry_http_requests_total", **labels) == value(
        before, "soundsentry_http_requests_total", **labels) + 1
    timed = {"route": "/predict", "status": "200"}
    assert value(after, "soundsentry_http_request_duration_seconds_count", **timed) == value(
        before, "soundsentry_http_request_duration_seconds_count", **timed) + 1
    assert value(after, "soundsentry_http_request_duration_seconds_sum", **timed) > value(
        before, "soundsentry_http_request_duration_seconds_sum", **timed)
    verdict = {"overall": report["overall"], "zone": report["zone"]}
    assert value(after, "soundsentry_verdicts_total", **verdict) == value(before, "soundsentry_verdicts_total",
                                                                         **verdict) + 1
    assert set(report["timings_ms"]) >= {"decode", "vad"}
    for stage in report["timings_ms"]:
        assert value(after, "soundsentry_stage_duration_seconds_count", stage=stage) == value(
            before, "soundsentry_stage_duration_seconds_count", stage=stage) + 1
    # the scrape before this one was counted too, under its own route
    assert value(after, "soundsentry_http_requests_total", method="GET", route="/metrics", status="200") >= 1

    models = [labels for (name, labels) in after if name == "soundsentry_models_info"]
    assert len(models) == 1 and dict(models[0])["fusion"] == report["models"]["fusion"]
    assert value(after, "soundsentry_models_loaded") == 1
    assert value(after, "soundsentry_admission_max_running") == 2
    assert value(after, "soundsentry_admission_queue_depth") == 0  # nothing waits now
    assert ("soundsentry_admission_rejections_total", ()) in after


def test_refusals_are_counted_by_error_code(client: TestClient, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(bytes(range(256)) * 40)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    before = scrape(client)
    assert post_file(client, garbage).status_code == 415
    assert post_file(client, empty).status_code == 400
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)
    for route, status, code in (("/predict", "415", "unsupported_format"), ("/predict", "400", "empty_file"),
                                ("unmatched", "404", "not_found")):
        labels = {"route": route, "status": status, "error_code": code}
        assert value(after, "soundsentry_http_errors_total", **labels) == value(
            before, "soundsentry_http_errors_total", **labels) + 1, labels
    # a path nobody routes is not a label of its own (clients cannot grow the series)
    assert not any("/no/such/page" in str(labels) for _, labels in after)


def test_batch_files_are_counted_one_by_one(client: TestClient, encode_as, tmp_path: Path) -> None:
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 100)
    before = scrape(client)
    files = [("files", (p.name, p.read_bytes())) for p in (encode_as("wav"), bad)]
    body = client.post("/batch-predict", files=files).json()
    assert (body["successful"], body["failed"]) == (1, 1)
    after = scrape(client)
    code = {"error_code": "undecodable_audio"}
    assert value(after, "soundsentry_batch_file_errors_total", **code) == value(
        before, "soundsentry_batch_file_errors_total", **code) + 1
    decodes = "soundsentry_stage_duration_seconds_count"
    assert value(after, decodes, stage="decode") == value(before, decodes, stage="decode") + 1


# ----------------------------------------------------------------------------- request ids and the access line


def test_a_request_id_is_in_the_log_line_the_header_and_the_error_body(
        client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    garbage = tmp_path / "upload.wav"
    marker = b"AUDIO-BYTES-MARKER-7f3a"
    garbage.write_bytes(marker + bytes(range(256)) * 40)
    response = post_file(client, garbage, name=SECRET_NAME)
    assert response.status_code == 415
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(request_id)
    assert response.json() == {"error_code": "unsupported_format", "message": response.json()["message"],
                               "request_id": request_id}
    line = line_of(caplog, request_id)
    assert line["method"] == "POST" and line["route"] == "/predict" and line["status"] == 415
    assert line["error_code"] == "unsupported_format" and line["duration_ms"] > 0
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert SECRET_NAME not in logged and marker.decode() not in logged


def test_the_access_line_of_a_prediction(client: TestClient, speech_wav: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = post_file(client, speech_wav, name=SECRET_NAME)
    assert response.status_code == 200
    report = response.json()
    line = line_of(caplog, response.headers["x-request-id"])
    assert line["status"] == 200 and line["route"] == "/predict" and "error_code" not in line
    assert line["verdict"] == report["overall"] and line["zone"] == report["zone"]
    assert line["timings_ms"] == report["timings_ms"]
    assert line["audio_s"] == pytest.approx(report["duration_config"]["duration"], abs=0.01)
    assert "filename" not in line and SECRET_NAME not in json.dumps(line)
    assert caplog.records[-1].getMessage().count("\n") == 0  # one line


def test_a_sane_client_id_is_echoed_an_insane_one_replaced(client: TestClient,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    for sent in ("trace-0a1B.2_c:3", "x" * MAX_REQUEST_ID_CHARS):
        response = client.get("/nowhere", headers={"X-Request-ID": sent})
        assert response.headers["x-request-id"] == sent and response.json()["request_id"] == sent
        assert line_of(caplog, sent)["status"] == 404
    for sent in ("x" * (MAX_REQUEST_ID_CHARS + 1), "id with spaces", '"}{"status":200', "<script>", ""):
        response = client.get("/health", headers={"X-Request-ID": sent})
        request_id = response.headers["x-request-id"]
        assert request_id != sent and GENERATED_ID.fullmatch(request_id), sent
        assert line_of(caplog, request_id)["route"] == "/health"


def test_refusals_before_the_route_carry_the_id_too(client: TestClient, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\0" * (3 * 1024 * 1024))  # over the 2 MiB limit: refused on Content-Length
    response = post_file(client, big, headers={"X-Request-ID": "big-upload-1"})
    assert response.status_code == 413 and response.json()["error_code"] == "file_too_large"
    assert response.json()["request_id"] == response.headers["x-request-id"] == "big-upload-1"
    origin = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    preflight = client.options("/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert GENERATED_ID.fullmatch(preflight.headers["x-request-id"])
    exposed = client.get("/", headers={"Origin": origin}).headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed  # the extension can read it


def test_a_server_fault_answers_500_with_the_id(caplog: pytest.LogCaptureFixture) -> None:
    """Starlette answers an unhandled exception outside the middleware: the id still reaches body, header, log."""
    app = create_app(Settings())

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = TestClient(app, raise_server_exceptions=False).get("/broken", headers={"X-Request-ID": "fault-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "fault-1"
    assert response.json()["error_code"] == "internal_error" and response.json()["request_id"] == "fault-1"
    line = line_of(caplog, "fault-1")
    assert line["status"] == 500 and line["error_code"] == "internal_error" and line["route"] == "/broken"


def test_file_names_are_logged_only_when_configured(speech_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A second app in the process, with SOUNDSENTRY_LOG_FILENAMES on: its own metrics, the name in its line."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    with TestClient(create_app(Settings(log_filenames=True))) as named:
        response = post_file(named, speech_wav, name=SECRET_NAME)
        assert response.status_code == 200
        assert line_of(caplog, response.headers["x-request-id"])["filename"] == SECRET_NAME
        samples = scrape(named)
    # only this app's request: the module's client made many more
    assert value(samples, "soundsentry_http_requests_total", method="POST", route="/predict", status="200") == 1


def test_metrics_stay_open_and_can_be_turned_off(tmp_path: Path) -> None:
    keyed = TestClient(create_app(Settings(api_keys=["k" * 32], data_dir=tmp_path)))
    assert keyed.get("/metrics").status_code == 200  # like /health: no key needed
    refused = keyed.get("/info")
    assert refused.status_code == 401 and refused.json()["request_id"] == refused.headers["x-request-id"]
    assert value(scrape(keyed), "soundsentry_models_loaded") == 0  # lifespan did not run: nothing loaded
    off = TestClient(create_app(Settings(metrics_enabled=False, data_dir=tmp_path)))
    assert off.get("/metrics").status_code == 404
    assert "x-request-id" in off.get("/").headers


def test_error_schema_names_the_request_id() -> None:
    schema = create_app(Settings()).openapi()["components"]["schemas"]["ErrorResponse"]
    assert set(schema["required"]) == {"error_code", "message", "request_id"}


# ----------------------------------------------------------------------------- the launcher's logging


def test_the_launcher_logs_info_and_one_json_line_per_request(tmp_path: Path) -> None:
    """``python -m api.server``: the app's INFO records appear, and each request is one JSON line on stdout
    (uvicorn's own access line is off, so it is not logged twice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SOUNDSENTRY_")},
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SOUNDSENTRY_DATA_DIR": str(tmp_path / "no-models")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, err.read_text()
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "probe-1"})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, err.read_text()
                    time.sleep(0.2)
            assert answer.status_code == 503 and answer.headers["x-request-id"] == "probe-1"
            time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert [p["status"] for p in parsed if p["request_id"] == "probe-1"] == [503]
    logs = err.read_text()
    assert " INFO api: capacity:" in logs and "models failed to load" in logs
    assert "GET /health HTTP/1.1" not in logs + out.read_text()  # no uvicorn access line
