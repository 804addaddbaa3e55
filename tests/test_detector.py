"""The detection path on real audio with the shipped models: VAD, encoder, TKAN, diarization, roll-up."""

from __future__ import annotations

import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from soundsentry.audio import decode_file
from soundsentry.detector import DEFAULT_DATA_DIR, Detector, DetectorConfig
from soundsentry.errors import ModelLoadError
from soundsentry.fusion import FUSION_FILE, Fusion, logit
from soundsentry.models.classifier import SCALER_FILE, load_tkan_artifacts
from soundsentry.models.resemblyzer import LAYER_NAMES, SpeakerNetwork
from soundsentry.models.tkan import FeatureSpec, tkan_features
from soundsentry.report import SegmentResult
from soundsentry.rollup import duration_category, label, overall_verdict, roll_up_speakers, zone
from soundsentry.scorers import REGISTRY, load_member
from soundsentry.speech.segments import SegmentConfig, scoring_segments, single_speaker_annotation
from soundsentry.speech.vad import SileroVad


@pytest.fixture(scope="session")
def detector() -> Detector:
    return Detector.load()


def test_vad_finds_speech_and_not_silence(speech_wav: Path, silence_wav: Path, noise_wav: Path) -> None:
    vad = SileroVad()
    speech = decode_file(speech_wav)
    regions = vad(speech.samples)
    assert regions, "no speech found in an espeak-ng sentence"
    assert sum(r.duration for r in regions) > 0.6 * speech.duration_s
    assert vad(decode_file(silence_wav).samples) == []
    assert sum(r.duration for r in vad(decode_file(noise_wav).samples)) < 0.5


def test_unrolled_encoder_matches_resemblyzer(speech_wav: Path) -> None:
    """Three single-layer LSTMs with the stacked weights give Resemblyzer's own embedding."""
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    samples = decode_file(speech_wav).samples[:25_600]  # exactly one 1.6 s window
    network = SpeakerNetwork()
    ours = network.analyse(samples).embeddings[0]
    normalised = samples * (10 ** (-30 / 20) / np.sqrt(np.mean(samples**2)))
    mels = torch.from_numpy(wav_to_mel_spectrogram(normalised)[:160][None])
    with torch.no_grad():
        theirs = VoiceEncoder("cpu", verbose=False)(mels).numpy()[0]
    assert float(ours @ theirs) > 0.9999


def test_encoder_windows_cover_audio(speech_wav: Path) -> None:
    samples = decode_file(speech_wav).samples
    windows = SpeakerNetwork().analyse(samples, hop_s=0.8)
    assert windows.layer_mean.shape == (len(windows), len(LAYER_NAMES), 256)
    assert windows.starts[0] == 0.0
    assert windows.starts[-1] + windows.window_s == pytest.approx(samples.size / 16_000, abs=0.02)
    assert np.allclose(np.linalg.norm(windows.embeddings, axis=1), 1.0, atol=1e-5)


def test_tkan_reductions_on_hand_made_activations() -> None:
    from soundsentry.models.resemblyzer import WindowActivations

    mean = np.zeros((2, 4, 256), dtype=np.float32)
    mean[0, 0, :4] = [0.1, 0.9, 0.5, 0.7]
    mean[1, 0, :4] = [0.3, 0.1, 0.5, 0.9]  # window average: 0.2, 0.5, 0.5, 0.8
    activations = WindowActivations(np.zeros(2), mean, np.ones_like(mean), np.zeros((2, 256)))
    values = tkan_features(activations, FeatureSpec(layers=("lstm1",), k=2))
    assert values.tolist() == pytest.approx([0.8, 0.5])
    masked = tkan_features(activations, FeatureSpec(layers=("lstm1",), k=2, reduction="masked"))
    assert masked.shape == (256,) and np.count_nonzero(masked) == 2 and masked[3] == pytest.approx(0.8)
    both = tkan_features(activations, FeatureSpec(layers=("lstm1", "embedding"), k=2, stats=("mean", "std")))
    assert both.shape == (FeatureSpec(layers=("lstm1", "embedding"), k=2, stats=("mean", "std")).dimension,) == (8,)


def test_feature_spec_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown layers"):
        FeatureSpec(layers=("lstm9",))
    with pytest.raises(ValueError, match="k must be"):
        FeatureSpec(k=0)


def test_scoring_segments_merge_split_and_drop() -> None:
    annotation = Annotation()
    annotation[Segment(0.0, 2.0)] = "A"
    annotation[Segment(2.2, 4.0)] = "A"  # gap 0.2 s: merged with the first
    annotation[Segment(5.0, 5.5)] = "B"  # 0.5 s: too short, dropped
    annotation[Segment(6.0, 31.0)] = "B"  # 25 s: split into 3 pieces
    segments = scoring_segments(annotation, SegmentConfig(merge_gap_s=0.5, min_duration_s=0.8, max_duration_s=10))
    assert [(s.speaker, round(s.start, 2), round(s.end, 2)) for s in segments] == [
        ("A", 0.0, 4.0), ("B", 6.0, 14.33), ("B", 14.33, 22.67), ("B", 22.67, 31.0)]


def test_detector_scores_speech(detector: Detector, speech_wav: Path) -> None:
    report = detector.predict(decode_file(speech_wav))
    body = report.serialize()
    assert body["overall"] in ("Real", "Fake")
    assert 0.0 <= body["mean_probability"] <= 1.0 and 0.0 <= body["confidence"] <= 1.0
    assert body["details"] and all(d["speaker"] == "SPEAKER_00" for d in body["details"])
    assert len(body["speakers"]) == 1
    assert body["duration_config"]["category"] in ("very_short", "short", "normal")
    category = body["duration_config"]["category"]
    assert body["duration_config"]["threshold"] == pytest.approx(detector.thresholds[category], abs=1e-4)
    assert all(set(d["scores"]) == set(detector.members) for d in body["details"])
    assert all(0 <= d["start"] < d["end"] <= report.duration + 1e-6 for d in body["details"])
    speaker = body["speakers"][0]
    start = detector.uncertain_from[speaker["category"]]
    expected = ("fake" if speaker["result"] == "Fake" else "uncertain" if speaker["probability"] >= start else "real")
    assert speaker["zone"] == body["zone"] == expected


def test_zones_between_the_equal_error_point_and_the_operating_threshold() -> None:
    thresholds = {"very_short": 0.9, "short": 0.7, "normal": 0.6}
    eer = {"very_short": 0.5, "short": 0.5, "normal": 0.5}

    def segment(speaker: str, start: float, end: float, p: float) -> SegmentResult:
        return SegmentResult(speaker, start, end, p, label(p, thresholds[duration_category(end - start)]))

    assert [zone(p, 0.7, 0.5) for p in (0.2, 0.5, 0.69, 0.7)] == ["real", "uncertain", "uncertain", "fake"]
    # A: 4 s at 0.6 (short: uncertain); B: 10 s at 0.3 (normal: real) → Real overall, leaning fake
    speakers = roll_up_speakers([segment("A", 0, 4, 0.6), segment("B", 4, 14, 0.3)], thresholds, 1.0, eer)
    assert [(s.speaker, s.result, s.zone) for s in speakers] == [("A", "Real", "uncertain"), ("B", "Real", "real")]
    assert overall_verdict(speakers)[0::2] == ("Real", "uncertain")
    # A at 0.95 → Fake overall; without an operating point there is no uncertain zone
    speakers = roll_up_speakers([segment("A", 0, 4, 0.95), segment("B", 4, 14, 0.55)], thresholds, 1.0, eer)
    assert overall_verdict(speakers)[0::2] == ("Fake", "fake")
    plain = roll_up_speakers([segment("A", 0, 4, 0.6)], thresholds, 1.0)
    assert plain[0].zone == "real" and overall_verdict(plain)[2] == "real"


@pytest.mark.parametrize("fixture", ["silence_wav", "noise_wav"])
def test_detector_says_no_speech(detector: Detector, fixture: str, request: pytest.FixtureRequest) -> None:
    report = detector.predict(decode_file(request.getfixturevalue(fixture)))
    assert report.overall == "No Speech"
    assert report.segments == [] and "speech" in report.message


def test_embedded_diarization_separates_two_voices(
    detector: Detector, two_speaker_wav: Path, two_speaker_turns: list[tuple[float, float, str]]
) -> None:
    waveform = decode_file(two_speaker_wav)
    annotation = detector.diarizer(waveform.samples, detector.vad(waveform.samples))
    assert len(annotation.labels()) == 2
    # each reference turn is mostly covered by one hypothesis label, and the two voices get different labels
    majority = {}
    for start, end, speaker in two_speaker_turns:
        overlap = annotation.crop(Segment(start, end)).chart()
        majority.setdefault(speaker, set()).add(overlap[0][0])
    assert all(len(labels) == 1 for labels in majority.values()), majority
    assert majority["male"] != majority["female"]
    report = detector.predict(waveform, use_diarization=True)
    assert len(report.speakers) == 2
    assert {s.speaker for s in report.speakers} == {d.speaker for d in report.segments}


def test_shipped_artifacts_carry_their_metadata() -> None:
    artifacts = load_tkan_artifacts(DEFAULT_DATA_DIR)
    assert set(artifacts.thresholds) == {"very_short", "short", "normal"}
    assert all(0.0 < t < 1.0 for t in artifacts.thresholds.values())
    assert artifacts.metadata["cv_eer"] < 0.5 and artifacts.metadata["git_commit"]
    assert (DEFAULT_DATA_DIR / "MODEL_CARD.md").is_file()


def test_mismatched_scaler_refuses_to_load(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_DATA_DIR, tmp_path, dirs_exist_ok=True)
    bundle = joblib.load(tmp_path / SCALER_FILE)
    bundle["feature_key"] = FeatureSpec(k=7).key
    joblib.dump(bundle, tmp_path / SCALER_FILE)
    (tmp_path / FUSION_FILE).unlink()  # single-member mode: TKAN scores alone
    with pytest.raises(ModelLoadError, match="does not belong"):
        Detector.load(DetectorConfig(data_dir=tmp_path))


def test_members_the_fusion_does_not_weigh_are_not_loaded(tmp_path: Path, speech_wav: Path) -> None:
    """The shipped fusion weighs the CNN-Transformer and flatness: TKAN's files are not needed to start."""
    shutil.copytree(DEFAULT_DATA_DIR, tmp_path, dirs_exist_ok=True)
    for name in REGISTRY["tkan"].files:
        (tmp_path / name).unlink()
    detector = Detector.load(DetectorConfig(data_dir=tmp_path))
    assert tuple(detector.members) == Fusion.load(tmp_path / FUSION_FILE).active_members == ("cnn", "flatness")
    assert detector.models["tkan_classifier"] == "not used" and "tkan" not in detector.info()["members"]
    segment = detector.predict(decode_file(speech_wav)).segments[0]
    assert set(segment.scores) == {"cnn", "flatness"}
    # without the fusion either, nothing stands alone: the error names the file to restore
    (tmp_path / FUSION_FILE).unlink()
    with pytest.raises(ModelLoadError, match="feature_scaler.pkl is missing"):
        Detector.load(DetectorConfig(data_dir=tmp_path))


def test_every_registered_scorer_keeps_the_contract(speech_wav: Path) -> None:
    """Each shipped scorer loads by name and gives one P(fake) per segment, in [0, 1], for any batch."""
    samples = decode_file(speech_wav).samples
    segments = scoring_segments(single_speaker_annotation(SileroVad()(samples)))
    assert segments
    for name in REGISTRY:
        scorer = load_member(name, DEFAULT_DATA_DIR)
        assert scorer.name == name and all((DEFAULT_DATA_DIR / f).is_file() for f in scorer.files)
        scores = scorer.score(samples, segments)
        assert scores.shape == (len(segments),) and np.all((scores >= 0) & (scores <= 1))
        np.testing.assert_allclose(scorer.score(samples, segments[:1]), scores[:1], rtol=1e-5, atol=1e-6)
        assert scorer.score(samples, []).shape == (0,)
        assert set(scorer.models()) == set(REGISTRY[name].unused) and isinstance(scorer.info(), dict)


def test_missing_or_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing"):
        load_tkan_artifacts(tmp_path)
    shutil.copytree(DEFAULT_DATA_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "trained_model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="Cannot read"):
        load_tkan_artifacts(tmp_path)


def _data_dir_with_fusion(tmp_path: Path, fusion: Fusion | None) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    (data / FUSION_FILE).unlink(missing_ok=True)
    if fusion is not None:
        fusion.save(data / FUSION_FILE)
    return data


def test_fusion_combines_every_scorer_on_speech(tmp_path: Path, speech_wav: Path) -> None:
    weights = {"tkan": 0.7, "cnn": 1.3, "flatness": 0.5}
    fusion = Fusion(tuple(weights), tuple(weights.values()), -0.4, {"very_short": 0.4, "short": 0.45, "normal": 0.55})
    detector = Detector.load(DetectorConfig(data_dir=_data_dir_with_fusion(tmp_path, fusion)))
    assert tuple(detector.members) == ("tkan", "cnn", "flatness") and detector.thresholds == fusion.thresholds
    report = detector.predict(decode_file(speech_wav))
    assert report.segments
    for segment in report.segments:
        assert set(segment.scores) == set(weights)
        z = -0.4 + sum(w * logit(segment.scores[m]) for m, w in weights.items())
        assert segment.probability == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
        threshold = fusion.thresholds[duration_category(segment.end - segment.start)]
        assert segment.result == ("Fake" if segment.probability >= threshold else "Real")
    assert report.serialize()["models"]["fusion"] == "0.70·tkan + 1.30·cnn + 0.50·flatness"


def test_fusion_skips_members_without_weight(tmp_path: Path, speech_wav: Path) -> None:
    fusion = Fusion(("tkan", "cnn"), (1.0, 0.0), 0.0, {"very_short": 0.5, "short": 0.5, "normal": 0.5})
    data = _data_dir_with_fusion(tmp_path, fusion)
    (data / "cnn_transformer.pt").unlink()  # not needed when its weight is 0
    (data / "flatness.joblib").unlink()  # nor when the fusion does not name it
    detector = Detector.load(DetectorConfig(data_dir=data))
    assert tuple(detector.members) == ("tkan",)  # the CNN-Transformer is not loaded
    segment = detector.predict(decode_file(speech_wav)).segments[0]
    assert set(segment.scores) == {"tkan"} and segment.probability == pytest.approx(segment.scores["tkan"], abs=1e-6)


def test_fusion_artefact_problems_are_clear_load_errors(tmp_path: Path) -> None:
    fusion = Fusion(("tkan", "cnn"), (0.5, 0.5), 0.0, {"very_short": 0.5, "short": 0.5, "normal": 0.5})
    data = _data_dir_with_fusion(tmp_path, fusion)
    (data / "cnn_transformer.pt").unlink()
    with pytest.raises(ModelLoadError, match="CNN-Transformer the fusion needs"):
        Detector.load(DetectorConfig(data_dir=data))
    fitted = Fusion(fusion.members, (0.5, 0.0), 0.0, fusion.thresholds,
                    {"artefacts": {"trained_model.pth": "0" * 64}})  # fitted with another TKAN model
    fitted.save(data / FUSION_FILE)
    with pytest.raises(ModelLoadError, match="not the model"):
        Detector.load(DetectorConfig(data_dir=data))
    (data / FUSION_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable fusion artefact"):
        Detector.load(DetectorConfig(data_dir=data))



def test_band_limited_speech_is_flagged_as_unreliable(detector: Detector, speech_wav: Path, encode_as,
                                                      silence_wav: Path) -> None:
    """Telephone audio carries nothing above 4 kHz, where the shipped scorers read: the report says so."""
    wide = detector.predict_bytes(speech_wav.read_bytes(), filename="speech.wav").serialize()
    assert wide["audio"]["band_edge_hz"] > 7000 and wide["audio"]["band_limited"] is False
    assert "message" not in wide and "bandwidth" in wide["timings_ms"]
    narrow_path = encode_as("wav", extra_args=("-ar", "8000", "-c:a", "pcm_mulaw"))
    narrow = detector.predict_bytes(narrow_path.read_bytes(), filename="phone.wav").serialize()
    assert 3800 < narrow["audio"]["band_edge_hz"] < 4500 and narrow["audio"]["band_limited"] is True
    assert "unreliable" in narrow["message"] and narrow["overall"] in ("Real", "Fake")
    silent = detector.predict_bytes(silence_wav.read_bytes(), filename="silence.wav").serialize()
    assert "audio" not in silent and silent["overall"] == "No Speech"
