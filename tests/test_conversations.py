"""Conversations with a known fake speaker, and the roll-up that judges a speaker by its contrast to the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyannote.database.util import load_rttm

from soundsentry.detector import Detector
from soundsentry.evaluation.conversations import (
    SpeakerPool,
    build_conversations,
    devset_pools,
    judge,
    outcome,
    summarise_outcomes,
    write_conversations,
)
from soundsentry.report import SpeakerResult
from soundsentry.rollup import ROLLUP_FILE, ConversationRollup, contrast_features, load_rollup, overall_verdict
from soundsentry.training.fit_rollup import fit, leave_one_family_out, training_rows
from tests.conftest import speak

SHARED_DEVSET = Path(__file__).resolve().parents[2] / "shared" / "devset"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "A journey of a thousand miles begins with a single careful step.",
)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load()


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> tuple[SpeakerPool, SpeakerPool]:
    """Three "real" espeak-ng voices of one source and one "fake" voice of a family named formant."""
    directory = tmp_path_factory.mktemp("voices")
    voices = {"m3": ("en-us+m3", 35), "f4": ("en-us+f4", 70), "m1": ("en-gb+m1", 45), "f2": ("en-us+f2", 60)}
    files = {
        name: [speak(text, directory / f"{name}_{i}.wav", voice=voice, pitch=pitch) for i, text in enumerate(SENTENCES)]
        for name, (voice, pitch) in voices.items()
    }
    reals = SpeakerPool({n: files[n] for n in ("m3", "f4", "m1")}, {n: "studio" for n in ("m3", "f4", "m1")})
    return reals, SpeakerPool({"f2": files["f2"]}, {"f2": "formant"})


@pytest.fixture(scope="module")
def conversations(pools):
    return build_conversations(*pools, count=4, seed=3)


def test_conversations_are_mixed_or_controls_exact_and_seeded(pools, conversations, tmp_path: Path) -> None:
    assert [c.kind for c in conversations] == ["mixed", "control", "mixed", "control"]
    assert [len(c.reference.labels()) for c in conversations] == [2, 2, 3, 3]
    for conversation in conversations:
        fakes = [label for label in conversation.reference.labels() if label.endswith("_f2")]
        assert conversation.fake_labels == frozenset(fakes)
        assert len(fakes) == (conversation.kind == "mixed")
        assert {conversation.sources[label] for label in fakes} <= {"formant"}
        assert conversation.duration_s > 8.0 and np.abs(conversation.samples).max() <= 1.0
    again = build_conversations(*pools, count=4, seed=3)
    assert all(np.array_equal(a.samples, b.samples) and a.channel == b.channel
               for a, b in zip(conversations, again, strict=True))
    assert not np.array_equal(build_conversations(*pools, count=1, seed=4)[0].samples[:16000],
                              conversations[0].samples[:16000])

    table = write_conversations(conversations, tmp_path)
    rows = table.read_text().splitlines()
    assert rows[0].startswith("uri,kind,speakers,fake_labels,fake_source,channel,seed")
    assert len(rows) == 5
    first = conversations[0]
    read_back = load_rttm(tmp_path / f"{first.uri}.rttm")[first.uri]
    assert read_back.labels() == first.reference.labels()
    for label in first.reference.labels():  # RTTM keeps milliseconds
        ours, theirs = first.reference.label_timeline(label), read_back.label_timeline(label)
        assert len(ours) == len(theirs) and all(abs(a.start - b.start) < 1e-3 and abs(a.end - b.end) < 1e-3
                                                for a, b in zip(ours, theirs, strict=True))
    assert (tmp_path / f"{first.uri}.flac").stat().st_size > 10_000


def test_a_source_without_enough_speakers_is_a_clear_error(pools) -> None:
    reals, fakes = pools
    one = SpeakerPool({"m3": reals.files["m3"]}, {"m3": "studio"})
    with pytest.raises(ValueError, match="no real source has 2 speakers"):
        build_conversations(one, fakes, count=2, seed=0)


def _speaker(name: str, probability: float, counted: bool = True) -> SpeakerResult:
    return SpeakerResult(name, 6.0, probability, "Fake" if probability >= 0.5 else "Real", "normal", 0.5, 3, counted)


def test_contrast_rollup_judges_a_speaker_against_the_others() -> None:
    rollup = ConversationRollup((0.0, 2.0, 0.0), 0.0, threshold=0.6, uncertain_from=0.5)
    speakers = [_speaker("A", 0.30), _speaker("B", 0.45), _speaker("C", 0.9, counted=False)]
    judged = rollup.apply(speakers, recording_probability=0.4)
    by = {s.speaker: s for s in judged}
    # B stands out over A (margin +0.65 logits): Fake; A sits under B: Real; C has too little speech to judge
    assert by["B"].result == "Fake" and by["B"].zone == "fake" and by["B"].own_probability == 0.45
    assert by["A"].result == "Real" and by["A"].probability < 0.5 and by["A"].threshold == 0.6
    assert by["C"] is speakers[2]
    assert overall_verdict(judged)[0] == "Fake" and overall_verdict(speakers)[0] == "Real"
    # one counted speaker: nothing to contrast, judged alone as before
    assert rollup.apply([_speaker("A", 0.3)], 0.3) == [_speaker("A", 0.3)]
    assert judged[0].serialize()["own_probability"] == 0.3


def test_contrast_features_and_the_artefact(tmp_path: Path) -> None:
    features = contrast_features(np.array([0.5, 0.9]), 0.5)
    assert features[0] == pytest.approx([0.0, -np.log(9), 0.0]) and features[1, 1] == pytest.approx(np.log(9))
    with pytest.raises(ValueError, match="two or more"):
        contrast_features(np.array([0.5]), 0.5)
    rollup = ConversationRollup((0.1, 1.0, 0.2), -0.3, 0.7, 0.55, {"how": "test"})
    rollup.save(tmp_path / ROLLUP_FILE)
    assert load_rollup(tmp_path) == rollup and load_rollup(tmp_path / "missing") is None
    data = json.loads((tmp_path / ROLLUP_FILE).read_text())
    with pytest.raises(ValueError, match="features"):
        ConversationRollup.from_dict({**data, "features": ["own_logit"]})
    with pytest.raises(ValueError, match="uncertain_from"):
        ConversationRollup((0.1, 1.0, 0.2), 0.0, threshold=0.5, uncertain_from=0.6)


def _judged(uri: str, kind: str, family: str | None, own: list[float], fake_index: int | None):
    from soundsentry.evaluation.conversations import JudgedConversation

    speakers = [_speaker(f"S{i}", p) for i, p in enumerate(own)]
    labels = {f"ref{i}": f"S{i}" for i in range(len(own))}
    fake_labels = frozenset() if fake_index is None else frozenset({f"ref{fake_index}"})
    share = {f"S{i}": float(i == fake_index) for i in range(len(own))}
    return JudgedConversation(uri, kind, "oracle", family, speakers, float(np.mean(own)), share, labels,
                              fake_labels, 0.0)


def test_fit_learns_that_the_speaker_who_stands_out_is_fake() -> None:
    """Channels shift every speaker of a recording alike; the fake stands out of its own recording."""
    rng = np.random.default_rng(0)
    judged = []
    for index in range(120):
        channel = rng.normal(0.0, 1.5)  # the recording's shift, in logits
        logits = channel + rng.normal(0.0, 0.3, size=3)
        kind = "mixed" if index % 2 == 0 else "control"
        fake = int(rng.integers(3)) if kind == "mixed" else None
        if fake is not None:
            logits[fake] += 2.0
        judged.append(_judged(f"c{index}", kind, f"family{index % 3}" if fake is not None else None,
                              list(1 / (1 + np.exp(-logits))), fake))
    x, y, groups = training_rows(judged)
    assert x.shape == (360, 3) and y.sum() == 60 and np.unique(groups).size == 120
    rollup = fit(judged, target=0.1)
    assert rollup.weights[1] > 1.0 and rollup.weights[1] > abs(rollup.weights[0])
    alone = summarise_outcomes([outcome(j) for j in judged])
    contrast = summarise_outcomes([outcome(j, rollup) for j in judged])
    assert contrast["verdict_right"]["rate"] > alone["verdict_right"]["rate"] + 0.2
    assert contrast["controls_real"]["rate"] >= 0.85
    lofo = leave_one_family_out(judged, target=0.1)
    assert set(lofo["per_family"]) == {"family0", "family1", "family2"}
    assert lofo["contrast"]["conversations"] == 120 and lofo["contrast"]["clones_caught"]["rate"] > 0.8


def test_the_served_path_judges_conversations(conversations, detector: Detector) -> None:
    mixed = conversations[0]
    oracle = judge(detector, mixed, "oracle")
    assert set(oracle.matched) == set(mixed.reference.labels())
    assert all(label == speaker for label, speaker in oracle.matched.items())
    assert oracle.fake_source == "formant" and oracle.der < 0.3
    assert all(oracle.fake_share[label] > 0.9 for label in mixed.fake_labels)  # < 1 where turns overlap
    diarized = judge(detector, mixed, "diarized")
    assert 0.0 <= diarized.der <= 1.0 and diarized.speakers
    result = outcome(oracle)
    assert result.kind == "mixed" and result.speakers == 2 and result.clone_caught is not None
    # with a roll-up the detector answers through it, and says so
    rollup = ConversationRollup((0.0, 1.0, 0.0), 0.0, 0.6, 0.5)
    with_rollup = Detector(detector.config, detector.speech, detector.members, detector.fusion, rollup)
    from soundsentry.audio import Waveform

    report = with_rollup.predict(Waveform(mixed.samples), turns=mixed.reference)
    assert all(s.own_probability is not None for s in report.speakers if s.counted)
    assert with_rollup.info()["rollup"]["threshold"] == 0.6 and "contrast" in with_rollup.models["rollup"]


@pytest.mark.skipif(not (SHARED_DEVSET / "manifest.csv").is_file(),
                    reason=f"{SHARED_DEVSET} (the devset the conversations are built from) is not present")
def test_devset_conversations_keep_each_source_apart() -> None:
    reals, fakes = devset_pools(SHARED_DEVSET)
    assert len(reals.files) > 200 and len(fakes.files) > 250
    for conversation in build_conversations(reals, fakes, count=2, seed=1):
        assert len(set(conversation.sources.values())) == 1
