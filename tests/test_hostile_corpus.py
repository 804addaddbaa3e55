"""Every case of the hostile corpus (``tests/hostile_corpus.py``) through the real app and models, in
process: each must get its status and ``error_code`` within its time bound, grow peak RSS by at
most its bound (300 MB at the default limits), reach nothing outside the upload, and leave nothing
in the upload spool or the temp directory; the server must answer ``/health`` afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from api.core.config import Settings
from api.main import create_app
from soundsentry import audio
from tests.conftest import run_ffmpeg
from tests.hostile_corpus import CASES, Case, Sources, measure, problems, reset_peak, watching


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, speech_wav: Path) -> Iterator[Sources]:
    workdir = tmp_path_factory.mktemp("corpus")
    speech = workdir / "speech-2500ms.wav"
    run_ffmpeg("-i", str(speech_wav), "-t", "2.5", "-c:a", "pcm_s16le", str(speech))
    with watching(workdir) as watchers:
        yield Sources(workdir, speech, watchers)


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus-spool")


SETTINGS = {  # the shipped limits, and two with a bound tiny enough to pass
    "default": {},
    "tight_decode": {"decode_timeout_s": 0.3},
    "tight_detection": {"detection_timeout_s": 0.2},
}


@pytest.fixture(scope="module")
def clients(spool: Path) -> Iterator[dict[str, TestClient]]:
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(TestClient(create_app(Settings(tmp_dir=spool / name, model_retry_s=0,
                                                                     **overrides)),
                                                 raise_server_exceptions=False))
            for name, overrides in SETTINGS.items()
        }


def _emfile(*args, **kwargs):
    raise OSError(errno.EMFILE, "Too many open files")


def _no_pyav(*args, **kwargs):
    raise audio._DecodeAttemptError("PyAV: injected failure, so the ffmpeg program decodes")


@contextlib.contextmanager
def injected(fault: str | None) -> Iterator[None]:
    """The server short of something while one case runs."""
    import av

    from soundsentry.detector import Detector

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    patches = {
        None: [],
        "emfile-memfd": [mock.patch.object(audio, "_decode_with_pyav", _no_pyav),
                         mock.patch.object(audio.os, "memfd_create", _emfile)],
        "emfile-spawn": [mock.patch.object(audio, "_decode_with_pyav", _no_pyav),
                         mock.patch.object(audio.subprocess, "Popen", _emfile)],
        "emfile-pyav": [mock.patch.object(av, "open", _emfile)],
        "enospc-spool": [mock.patch.object(tempfile, "TemporaryFile", no_space)],
        "emfile-spool": [mock.patch.object(tempfile, "TemporaryFile", _emfile)],
        "memory-decode": [mock.patch.object(audio._MonoSink, "push", out_of_memory)],
        "memory-detection": [mock.patch.object(Detector, "predict", out_of_memory)],
    }[fault]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def test_peak_rss_can_be_reset_here() -> None:
    assert reset_peak(), "cannot reset peak RSS (/proc/self/clear_refs): the RSS bounds below would be blind"


def test_the_corpus_covers_every_class_with_over_100_cases() -> None:
    groups = {case.group for case in CASES}
    assert len(CASES) >= 100 and len({case.name for case in CASES}) == len(CASES)
    assert groups == {"reach", "memory", "slots", "faults", "truncation", "garbage", "damaged", "shape"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_upload(case: Case, sources: Sources, clients: dict[str, TestClient], spool: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    client = clients[case.settings]
    monkeypatch.chdir(sources.watchers.marker.parent)  # a relative reference would find the marker
    data = case.build(sources)

    def post(case: Case, data: bytes) -> tuple[int, dict]:
        with injected(case.fault):
            response = client.post("/predict", files={"audio": (case.filename, data)}, data=dict(case.form) or None)
        return response.status_code, response.json()

    temp_before = set(Path(tempfile.gettempdir()).iterdir())
    outcome = measure(post, case, data, pid="self", spool=spool, watchers=sources.watchers)
    assert problems(case, outcome) == [], outcome
    assert set(Path(tempfile.gettempdir()).iterdir()) <= temp_before, "temp files left behind"
    assert client.get("/health").status_code == 200
