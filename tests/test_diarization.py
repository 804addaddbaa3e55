"""Diarization: the embedded diarizer on real (espeak-ng) voices, the pyannote backend through a
random-weight pipeline directory, backend choice, DER scoring and the evaluation script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline

from soundsentry.audio import decode_file
from soundsentry.errors import ModelLoadError
from soundsentry.evaluation.evaluate_diarization import (
    ConversationRecipe,
    aggregate,
    der_components,
    synthetic_items,
)
from soundsentry.evaluation.evaluate_diarization import (
    main as evaluate_main,
)
from soundsentry.models import export as entry
from soundsentry.models.resemblyzer import SpeakerNetwork
from soundsentry.speech.diarization import (
    DiarizerConfig,
    EmbeddedDiarizer,
    cluster_embeddings,
    embed_windows,
    load_speech_backends,
    merge_regions,
    viterbi,
)
from soundsentry.speech.vad import SileroVad, SpeechRegion, find_speech

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="module")
def network() -> SpeakerNetwork:
    return SpeakerNetwork()


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def annotation_of(turns: list[tuple[float, float, str]], uri: str = "test") -> Annotation:
    annotation = Annotation(uri=uri)
    for index, (start, end, speaker) in enumerate(turns):
        annotation[Segment(start, end), index] = speaker
    return annotation


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def test_der_parts_on_a_hand_made_example() -> None:
    """Reference A 0-10, B 10-20. Hypothesis: X 0-8, Y 8-15 and 16-22.
    Best mapping X->A, Y->B: confusion 8-10 (2 s), missed 15-16 (1 s), false alarm 20-22 (2 s)."""
    reference = annotation_of([(0, 10, "A"), (10, 20, "B")])
    hypothesis = annotation_of([(0, 8, "X"), (8, 15, "Y"), (16, 22, "Y")])
    parts = der_components(reference, hypothesis, Timeline([Segment(0, 22)]))
    assert parts["total"] == pytest.approx(20.0)
    assert parts["confusion"] == pytest.approx(2.0)
    assert parts["missed detection"] == pytest.approx(1.0)
    assert parts["false alarm"] == pytest.approx(2.0)
    assert parts["diarization error rate"] == pytest.approx(5.0 / 20.0)
    # outside the UEM nothing counts: scored on 0-20 only, the false alarm disappears
    assert der_components(reference, hypothesis, Timeline([Segment(0, 20)]))["false alarm"] == pytest.approx(0.0)


def test_overlap_is_scored_and_one_label_per_frame_misses_it() -> None:
    """Reference A 0-10 and B 8-12 overlap for 2 s (total 14 s of speech); a single-label
    hypothesis A 0-10, B 10-12 misses B's 2 overlapped seconds and nothing else."""
    reference = annotation_of([(0, 10, "A"), (8, 12, "B")])
    hypothesis = annotation_of([(0, 10, "s1"), (10, 12, "s2")])
    parts = der_components(reference, hypothesis, Timeline([Segment(0, 12)]))
    assert parts["total"] == pytest.approx(14.0)
    assert parts["missed detection"] == pytest.approx(2.0)
    assert parts["confusion"] == pytest.approx(0.0) and parts["false alarm"] == pytest.approx(0.0)
    summed = aggregate([parts, {"confusion": 1.0, "missed detection": 0.0, "false alarm": 3.0, "total": 6.0}])
    assert summed["total"] == pytest.approx(20.0) and summed["der"] == pytest.approx(6.0 / 20.0)


def test_viterbi_pays_for_changes() -> None:
    scores = np.array([[1.0, 0.0], [0.4, 0.6], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    no_cost = viterbi(scores, np.zeros(5))
    assert no_cost.tolist() == [0, 1, 0, 1, 1]
    costly = viterbi(scores, np.full(5, 0.5))  # a 0.2 gain on frame 1 is not worth two changes
    assert costly.tolist() == [0, 0, 0, 1, 1]


# --------------------------------------------------------------------------------------------
# the embedded diarizer on real audio
# --------------------------------------------------------------------------------------------


def test_embedded_diarizer_separates_two_voices(
    network: SpeakerNetwork, vad: SileroVad, two_speaker_wav: Path, two_speaker_turns: list[tuple[float, float, str]]
) -> None:
    samples = decode_file(two_speaker_wav).samples
    diarizer = EmbeddedDiarizer(network)
    hypothesis = diarizer(samples, vad(samples), uri="two")
    assert hypothesis.labels() == ["SPEAKER_00", "SPEAKER_01"]
    reference = annotation_of(two_speaker_turns, uri="two")
    parts = der_components(reference, hypothesis, Timeline([Segment(0, samples.size / 16_000)]))
    assert parts["diarization error rate"] < 0.15, parts
    assert parts["confusion"] < 0.5  # seconds; the rest is VAD edges
    # the first voice is SPEAKER_00, and no speaker is counted twice anywhere
    assert hypothesis.argmax(Segment(*two_speaker_turns[0][:2])) == "SPEAKER_00"
    assert hypothesis.get_overlap().duration() == 0.0


def test_one_voice_stays_one_speaker(network: SpeakerNetwork, vad: SileroVad, speech_wav: Path) -> None:
    samples = decode_file(speech_wav).samples
    looped = np.concatenate([samples, np.zeros(8000, np.float32), samples, np.zeros(8000, np.float32), samples])
    hypothesis = EmbeddedDiarizer(network)(looped, vad(looped))
    assert hypothesis.labels() == ["SPEAKER_00"]
    assert hypothesis.get_timeline().duration() > 0.6 * looped.size / 16_000


def test_edge_inputs(network: SpeakerNetwork, speech_wav: Path) -> None:
    samples = decode_file(speech_wav).samples
    assert len(EmbeddedDiarizer(network)(np.zeros(0, np.float32), [])) == 0  # no audio, no turns
    diarizer = EmbeddedDiarizer(network, DiarizerConfig(vad_threshold=None))  # the given regions only
    assert len(diarizer(samples, [])) == 0  # no speech, no turns
    tiny = [SpeechRegion(0.5, 0.7), SpeechRegion(2.0, 2.2)]  # too short to embed: one speaker, kept
    assert diarizer(samples, tiny).labels() == ["SPEAKER_00"]
    assert diarizer(samples, tiny).get_timeline().duration() == pytest.approx(0.4)


def test_regions_are_joined() -> None:
    regions = merge_regions(
        [SpeechRegion(2.0, 3.0), SpeechRegion(0.0, 1.0)],
        [SpeechRegion(0.5, 1.5), SpeechRegion(3.0, 4.0)],
        [SpeechRegion(5.0, 5.0)],
    )
    assert regions == [SpeechRegion(0.0, 1.5), SpeechRegion(2.0, 4.0)]


def test_speech_the_given_regions_miss_is_diarized_too(
    network: SpeakerNetwork, vad: SileroVad, speech_wav: Path
) -> None:
    """The embedded diarizer joins its own, more sensitive VAD's regions to those it is given."""
    samples = decode_file(speech_wav).samples
    looped = np.concatenate([samples, np.zeros(8000, np.float32), samples])
    regions = vad(looped)
    first_half = [r for r in regions if r.end <= samples.size / 16_000]
    assert first_half and len(first_half) < len(regions)
    second_half = Segment(samples.size / 16_000 + 0.5, looped.size / 16_000)
    given_only = EmbeddedDiarizer(network, DiarizerConfig(vad_threshold=None))(looped, first_half)
    assert given_only.get_timeline().crop(second_half).duration() == 0.0
    joined = EmbeddedDiarizer(network)(looped, first_half)
    assert joined.get_timeline().crop(second_half).duration() > 0.5 * second_half.duration
    given = Timeline([Segment(r.start, r.end) for r in first_half])
    assert joined.get_timeline().support().crop(given).duration() == pytest.approx(given.duration(), abs=0.05)



def test_one_silero_pass_serves_both_thresholds(
    network: SpeakerNetwork, vad: SileroVad, two_speaker_wav: Path, monkeypatch
) -> None:
    """find_speech keeps Silero's frame probabilities; the diarizer's sensitive pass reuses them and
    gets the same turns as with a forward of its own."""
    samples = decode_file(two_speaker_wav).samples
    diarizer = EmbeddedDiarizer(network)
    own_pass = diarizer(samples, vad(samples))
    forwards = []
    original = SileroVad.speech_probabilities
    monkeypatch.setattr(SileroVad, "speech_probabilities", lambda self, x: forwards.append(1) or original(self, x))
    regions, probabilities = find_speech(vad, samples)
    assert regions == vad(samples, probabilities=probabilities) and probabilities is not None
    shared = diarizer(samples, regions, speech_probabilities=probabilities)
    assert len(forwards) == 1  # find_speech's only: the diarizer ran no forward of its own
    assert shared == own_pass
    assert find_speech(vad, np.zeros(0, np.float32)) == ([], None)

needs_ami = pytest.mark.skipif(
    not (SHARED_DIR / "diarization" / "ami_debug" / "trn07.flac").is_file(),
    reason=f"{SHARED_DIR}/diarization/ami_debug (AMI excerpts) is not present",
)


@needs_ami
def test_quiet_meeting_speech_is_found(network: SpeakerNetwork, vad: SileroVad) -> None:
    """AMI excerpts: the default VAD misses distant speakers; the diarizer's sensitive VAD finds more."""
    from soundsentry.evaluation.evaluate_diarization import ami_items

    found_by_default = found = 0.0
    for item in ami_items(SHARED_DIR):
        speech = item.reference.get_timeline().support().crop(item.uem)
        regions = vad(item.samples)
        found_by_default += Timeline([Segment(r.start, r.end) for r in regions]).support().crop(speech).duration()
        hypothesis = EmbeddedDiarizer(network)(item.samples, regions, uri=item.uri)
        found += hypothesis.get_timeline().support().crop(speech).duration()
    assert found > found_by_default + 5.0, (found, found_by_default)  # seconds, of ~250 s of speech


def test_embedding_is_streamed_in_bounded_batches(network: SpeakerNetwork, speech_wav: Path, monkeypatch) -> None:
    samples = decode_file(speech_wav).samples
    regions = [SpeechRegion(0.0, samples.size / 16_000)]
    whole = embed_windows(network, samples, regions, hop_s=0.4, batch_windows=64)
    batch_sizes = []
    original = network.net.forward

    def spy(mels):
        batch_sizes.append(mels.shape[0])
        return original(mels)

    monkeypatch.setattr(network.net, "forward", spy)
    streamed = embed_windows(network, samples, regions, hop_s=0.4, batch_windows=4)
    assert max(batch_sizes) <= 4 and sum(batch_sizes) == len(whole) > 4
    np.testing.assert_allclose(streamed.starts, whole.starts)
    # each batch normalises its own volume: embeddings agree closely, not bit for bit
    assert np.min(np.sum(streamed.vectors * whole.vectors, axis=1)) > 0.98


def test_clustering_of_many_windows_is_bounded() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    vectors = np.concatenate([c + 0.3 * rng.normal(size=(500, 32)) for c in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = cluster_embeddings(vectors, distance_threshold=0.5, min_size=5, max_windows=200)  # subsample, assign
    assert labels.shape == (1500,) and labels.max() == 2
    assert all(len(set(labels[i * 500 : (i + 1) * 500])) == 1 for i in range(3))


# --------------------------------------------------------------------------------------------
# the pyannote backend, offline, through a random-weight pipeline directory
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return entry.write_random_pipeline(tmp_path_factory.mktemp("pyannote") / "speaker-diarization-community-1")


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # random weights
def test_random_weight_pyannote_pipeline_runs_end_to_end(random_pipeline_dir: Path, two_speaker_wav: Path) -> None:
    from soundsentry.detector import Detector, DetectorConfig

    assert entry.missing_pipeline_files(random_pipeline_dir) == []
    detector = Detector.load(DetectorConfig(diarization_backend="auto", pyannote_dir=random_pipeline_dir))
    assert detector.models["diarization_backend"].startswith("pyannote:")
    assert random_pipeline_dir.name in detector.models["diarization"]
    assert str(random_pipeline_dir.parent) not in detector.models["diarization"]  # no server paths
    assert detector.models["vad"].startswith("pyannote segmentation")
    samples = decode_file(two_speaker_wav).samples[: 6 * 16_000]  # one 10 s chunk: 3 embeddings
    duration = samples.size / 16_000
    regions = detector.vad(samples)  # random weights: any speech, but inside the audio
    assert all(0.0 <= r.start < r.end <= duration + 1e-6 for r in regions)
    annotation = detector.diarizer(samples, [SpeechRegion(0.0, duration)], uri="random")
    assert isinstance(annotation, Annotation) and annotation.uri == "random"
    assert all(0.0 <= s.start <= s.end <= duration for s in annotation.get_timeline())


def test_auto_falls_back_to_embedded_and_says_why(tmp_path: Path, monkeypatch, network: SpeakerNetwork) -> None:
    from soundsentry.speech import pyannote_backend

    # a token in the environment changes nothing: the service never downloads a pipeline
    monkeypatch.setenv(pyannote_backend.TOKEN_ENV, "hf_test")
    backends = load_speech_backends("auto", network=network, pyannote_dir=tmp_path)
    assert backends.backend == "embedded" and "scripts.entry export" in backends.reason
    with pytest.raises(ModelLoadError, match="scripts.entry export"):
        load_speech_backends("pyannote", network=network, pyannote_dir=tmp_path)

    def unloadable(directory):
        raise ModelLoadError(f"Cannot load the pyannote pipeline from {directory}: a broken checkpoint")

    (tmp_path / "config.yaml").write_text("pipeline: {}\n")
    monkeypatch.setattr(pyannote_backend, "load_pipeline", unloadable)
    backends = load_speech_backends("auto", network=network, pyannote_dir=tmp_path)
    assert backends.backend == "embedded" and "broken checkpoint" in backends.reason
    with pytest.raises(ValueError, match="must be one of"):
        load_speech_backends("kaldi")


def test_a_pipeline_that_names_a_hub_model_is_not_fetched(tmp_path: Path) -> None:
    """Loading runs with the hub offline: a config naming a hub model is a clear error, not a download."""
    (tmp_path / "config.yaml").write_text(
        "pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n"
        "  params:\n    segmentation: pyannote/segmentation-3.0\n"
        "    embedding: pyannote/wespeaker-voxceleb-resnet34-LM\n"
    )
    with pytest.raises(ModelLoadError, match="Cannot load the pyannote pipeline"):
        load_speech_backends("pyannote", pyannote_dir=tmp_path)


def test_broken_pipeline_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n"
        "  params:\n    segmentation: $model/segmentation\n"
    )
    with pytest.raises(ModelLoadError, match="Cannot load the pyannote pipeline"):
        load_speech_backends("pyannote", pyannote_dir=tmp_path)


def test_export_without_token_says_what_is_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HUGGING_FACE_TOKEN", raising=False)
    assert entry.main(["export", "--output", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "HUGGING_FACE_TOKEN is not set" in message and "hf.co/settings/tokens" in message
    assert not (tmp_path / "out").exists()
    assert entry.main(["check", str(tmp_path)]) == 2


# --------------------------------------------------------------------------------------------
# the evaluation script
# --------------------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not (SHARED_DIR / "corpus" / "manifest.csv").is_file(),
    reason=f"{SHARED_DIR}/corpus (LibriSpeech speakers for synthetic conversations) is not present",
)


@needs_shared
def test_synthetic_conversation_reference_is_exact_and_seeded() -> None:
    recipe = ConversationRecipe(min_speakers=3, max_speakers=3, seconds_per_speaker=(6.0, 8.0))
    first, again = (synthetic_items(SHARED_DIR, count=1, seed=5, recipe=recipe)[0] for _ in range(2))
    np.testing.assert_array_equal(first.samples, again.samples)
    assert len(first.reference.labels()) == 3
    extent = first.reference.get_timeline().extent()
    assert 0.0 < extent.start and extent.end < first.duration_s
    # where the reference says nobody speaks, the mix is (almost) silent
    silence = first.reference.get_timeline().support().gaps(first.uem.extent())
    quiet = np.concatenate(
        [first.samples[int(s.start * 16000) + 160 : int(s.end * 16000) - 160] for s in silence if s.duration > 0.1]
    )
    loud = np.concatenate(
        [first.samples[int(s.start * 16000) : int(s.end * 16000)] for s in first.reference.get_timeline()]
    )
    assert np.sqrt(np.mean(quiet**2)) < 0.1 * np.sqrt(np.mean(loud**2))


@needs_shared
def test_evaluation_script_on_a_tiny_synthetic_conversation(tmp_path: Path, capsys) -> None:
    code = evaluate_main(
        [
            "--backend",
            "embedded",
            "--dataset",
            "synthetic",
            "--synthetic-count",
            "1",
            "--synthetic-seed",
            "7",
            "--shared-dir",
            str(SHARED_DIR),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "| synthetic | 1 |" in table and "DER %" in table
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["datasets"]["synthetic"]
    assert summary["files"] == 1 and summary["total"] > 10.0
    assert summary["der"] == pytest.approx(
        sum(summary[k] for k in ("confusion", "missed detection", "false alarm")) / summary["total"]
    )
    assert summary["der"] < 0.4 and summary["rtf_diarization"] > 0
    assert (tmp_path / "hypotheses.rttm").read_text().startswith("SPEAKER synth7_000 1 ")


def test_telemetry_is_off_once_pyannote_is_used(random_pipeline_dir: Path) -> None:
    assert os.environ.get("PYANNOTE_METRICS_ENABLED") == "false"
    # whatever the environment says, importing any part of the package turns it off before pyannote loads
    probe = ("import os, soundsentry.speech.segments, pyannote.audio; "
             "print(os.environ['PYANNOTE_METRICS_ENABLED'])")
    for value in (None, "true"):
        env = {k: v for k, v in os.environ.items() if k != "PYANNOTE_METRICS_ENABLED"}
        if value is not None:
            env["PYANNOTE_METRICS_ENABLED"] = value
        shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parents[1])
        assert shown.stdout.strip() == "false"
