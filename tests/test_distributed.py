"""The batch evaluation on Dask, and resuming: ``soundsentry evaluate --engine dask`` gives the sequential
run's predictions, and a run in an output folder that holds partial results scores only what is missing.

Real espeak-ng speech (the labels are the test's: some voices are called fake) and one undecodable file,
through the shipped models, on a local cluster of two worker processes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from soundsentry.cli import evaluate_main
from soundsentry.evaluation.engines import PARTIAL_NAME
from tests.conftest import speak

VOICES = (  # (voice, pitch, label, text)
    ("en-us", 40, "real", "The library opens at nine and closes early on Sundays."),
    ("en-gb", 55, "real", "Please remember to water the plants while I am away."),
    ("en-us+f3", 65, "real", "We walked along the river until the sun went down."),
    ("en-gb+m2", 35, "real", "The train to the coast leaves from platform four."),
    ("en-us+f4", 70, "fake", "Your account has been verified, thank you for waiting."),
    ("en-us+m3", 30, "fake", "This call may be recorded for quality and training purposes."),
    ("en-gb+f2", 60, "fake", "The weather tomorrow will be cloudy with a chance of rain."),
)
TIMING = {"processing_ms"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven espeak-ng files (four labelled real, three fake) and one that is not audio."""
    folder = tmp_path_factory.mktemp("distributed")
    rows = []
    for index, (voice, pitch, label, text) in enumerate(VOICES):
        path = speak(text, folder / f"{label}{index}.wav", voice=voice, pitch=pitch)
        rows.append({"path": path.name, "label": label, "source": "espeak", "system": voice if label == "fake" else ""})
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 8)
    rows.append({"path": "broken.wav", "label": "fake", "source": "espeak", "system": "broken"})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def evaluate(manifest: Path, output: Path, *options: str) -> int:
    return evaluate_main(["--test-dir", str(manifest), "--output-dir", str(output), "--no-plots", *options])


@pytest.fixture(scope="module")
def sequential(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one whole sequential run."""
    output = tmp_path_factory.mktemp("sequential")
    assert evaluate(manifest, output) == 0
    return output


def rows(output: Path) -> list[dict[str, str]]:
    with (output / "predictions.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def metrics(output: Path) -> dict:
    found = json.loads((output / "metrics.json").read_text())
    return {k: v for k, v in found.items() if k not in ("run", "mean_processing_ms")}


def records(output: Path) -> list[dict]:
    """The per-file lines of the partial results (after the settings line)."""
    return [json.loads(line) for line in (output / PARTIAL_NAME).read_text().splitlines()[1:]]


def dask_leftovers() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).iterdir() if "dask" in path.name}


def test_sequential_run_scores_every_file_once(sequential: Path) -> None:
    found = rows(sequential)
    assert len(found) == len(VOICES) + 1
    broken = [row for row in found if row["path"].endswith("broken.wav")]
    assert len(broken) == 1 and broken[0]["status"] == "error" and broken[0]["error"]
    assert sum(row["status"] == "ok" for row in found) == len(VOICES)
    assert len({record["run"] for record in records(sequential)}) == 1
    run = json.loads((sequential / "metrics.json").read_text())["run"]
    assert run["engine"] == "sequential" and run["files_scored_now"] == len(VOICES) + 1


def test_dask_gives_the_sequential_predictions(manifest: Path, sequential: Path, tmp_path: Path) -> None:
    before = dask_leftovers()
    output = tmp_path / "dask"
    assert evaluate(manifest, output, "--engine", "dask", "--workers", "2") == 0
    assert rows(output) == rows(sequential)
    assert metrics(output) == metrics(sequential)
    run = json.loads((output / "metrics.json").read_text())["run"]
    assert run["engine"] == "dask" and run["workers"] == 2 and run["files_scored_now"] == len(VOICES) + 1
    assert not (output / ".dask-scratch").exists(), "the local cluster's scratch folder was left behind"
    assert dask_leftovers() <= before, "Dask left files in the temp folder"


def test_a_running_cluster_gives_the_sequential_predictions(manifest: Path, sequential: Path, tmp_path: Path) -> None:
    """``dask scheduler`` and ``dask worker ADDRESS --nthreads 1`` as the README starts them, then --scheduler."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    environ = os.environ | {"DASK_TEMPORARY_DIRECTORY": str(tmp_path / "scratch")}
    dask = [sys.executable, "-m", "dask"]
    logs = (tmp_path / "scheduler.log").open("w"), (tmp_path / "worker.log").open("w")
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 cwd=tmp_path, env=environ, stdout=logs[0], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--no-dashboard",
                               "--local-directory", str(tmp_path / "scratch")],
                              cwd=tmp_path, env=environ, stdout=logs[1], stderr=subprocess.STDOUT)
    try:
        output = tmp_path / "cluster"
        assert evaluate(manifest, output, "--engine", "dask", "--scheduler", address) == 0
        assert rows(output) == rows(sequential)
        run = json.loads((output / "metrics.json").read_text())["run"]
        assert run["scheduler"] == address and run["workers"] == 1
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=60)
        for log in logs:
            log.close()


def test_a_rerun_scores_only_the_missing_files(manifest: Path, sequential: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "resumed"
    assert evaluate(manifest, output, "--limit", "3") == 0
    first = records(output)
    assert len(first) == 3
    capsys.readouterr()
    assert evaluate(manifest, output) == 0
    assert "3 of 8 files already scored, scoring 5" in capsys.readouterr().err
    after = records(output)
    assert after[:3] == first
    assert len(after) == 8 and len({record["run"] for record in after[3:]} - {first[0]["run"]}) == 1
    assert {record["path"] for record in after} == {str(Path(row["path"]).absolute()) for row in rows(sequential)}
    assert rows(output) == rows(sequential)
    assert metrics(output) == metrics(sequential)
    # a third run scores nothing
    assert evaluate(manifest, output) == 0
    assert "8 of 8 files already scored, scoring 0" in capsys.readouterr().err
    assert records(output) == after


def test_dask_resumes_an_interrupted_run(manifest: Path, sequential: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The partial file of a run killed while writing its fifth file's line: four files are kept."""
    output = tmp_path / "interrupted"
    output.mkdir()
    lines = (sequential / PARTIAL_NAME).read_text().splitlines(keepends=True)
    (output / PARTIAL_NAME).write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    capsys.readouterr()
    assert evaluate(manifest, output, "--engine", "dask", "--workers", "2") == 0
    assert "4 of 8 files already scored, scoring 4" in capsys.readouterr().err
    found = records(output)
    assert found[:4] == records(sequential)[:4]
    assert len(found) == 8 and len({record["run"] for record in found[4:]}) == 1
    assert found[4]["run"] != found[0]["run"]
    assert rows(output) == rows(sequential)


def test_other_settings_are_refused_unless_restarted(manifest: Path, sequential: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "other"
    shutil.copytree(sequential, output)
    capsys.readouterr()
    assert evaluate(manifest, output, "--use-diarization") == 2
    message = capsys.readouterr().err
    assert "use_diarization: False there, True here" in message and "--restart" in message
    assert records(output) == records(sequential)
    assert evaluate(manifest, output, "--browser-chunks", "--restart", "--limit", "2") == 0
    assert "chunks=" in capsys.readouterr().err  # the bar counts files, the chunks in its postfix
    header = json.loads((output / PARTIAL_NAME).read_text().splitlines()[0])
    assert header["settings"]["browser_chunks"] == {"chunk_s": 4.0, "bitrate": "32k"}
    assert len(records(output)) == 2
    assert all(row["chunk"].split("#")[0] in row["path"] for row in rows(output))


def test_retrained_models_are_refused(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model file rewritten under the same name (what ``make train`` does to data/) is another model."""
    from soundsentry.constants import DEFAULT_DATA_DIR

    models = tmp_path / "models"
    shutil.copytree(DEFAULT_DATA_DIR, models)
    output = tmp_path / "out"
    assert evaluate(manifest, output, "--data-dir", str(models), "--limit", "1") == 0
    rollup = models / "rollup.json"
    rollup.write_text(rollup.read_text() + "\n")  # the same model, other bytes: the digest cannot tell
    capsys.readouterr()
    assert evaluate(manifest, output, "--data-dir", str(models), "--limit", "2") == 2
    assert "model_files" in capsys.readouterr().err
    assert len(records(output)) == 1
