"""The generator zoo: every generator speaks (or re-synthesises) here, offline, and the zoo's manifest says how
each file was made."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from soundsentry.speech.vad import SileroVad, total_duration
from soundsentry.training import make_zoo, zoo

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    from math import gcd

    g = gcd(rate, 16000)
    return resample_poly(samples, 16000 // g, rate // g).astype(np.float32)


def test_every_generator_is_installed_by_setup() -> None:
    assert zoo.available() == dict.fromkeys(zoo.GENERATORS)  # scripts/setup.sh --dev installs them all


def test_the_texts_are_many_and_licensed() -> None:
    texts = zoo.load_texts()
    assert len(texts) > 10_000 and {t.source for t in texts} == {"wordnet", "alice"}
    assert len({t.text.lower() for t in texts}) == len(texts)
    assert all(6 <= len(t.text.split()) <= 30 and t.licence for t in texts)


TTS_VOICES = [(name, voice) for name, generator in zoo.GENERATORS.items() if generator.kind == "tts"
              for voice in generator.voices]


@pytest.mark.parametrize(("name", "voice"), TTS_VOICES, ids=[f"{n}-{v}" for n, v in TTS_VOICES])
def test_each_voice_speaks_the_text(name: str, voice: str, vad: SileroVad) -> None:
    samples, rate = zoo.GENERATORS[name].speak(TEXT, voice, speed=1.0, pitch=1.0, seed=0)
    assert samples.dtype == np.float32 and np.isfinite(samples).all() and rate in (8000, 16000, 22050, 24000, 32000)
    seconds = len(samples) / rate
    assert 2.5 < seconds < 9.0, seconds  # 17 words
    speech = total_duration(vad(_to_16k(samples, rate)))
    assert speech > 0.6 * seconds, (speech, seconds)  # Silero hears speech, not noise or silence


def test_speed_is_honoured_where_the_generator_varies_it() -> None:
    for name in ("piper", "pico", "flite", "espeak"):
        generator = zoo.GENERATORS[name]
        voice = next(iter(generator.voices))
        slow, rate = generator.speak(TEXT, voice, speed=0.8, pitch=1.0, seed=0)
        fast, _ = generator.speak(TEXT, voice, speed=1.25, pitch=1.0, seed=0)
        assert len(slow) > 1.15 * len(fast), name  # 0.8 against 1.25: 1.56 if rate alone changed


@pytest.fixture(scope="module")
def real_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny corpus: one 16 kHz "real" (espeak-ng through ffmpeg, over a noise floor as a room has), with
    the corpus manifest's columns."""
    corpus = tmp_path_factory.mktemp("corpus")
    raw = corpus / "raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), TEXT], check=True)
    (corpus / "librispeech" / "real").mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(raw), "-ar", "16000", "-ac", "1",
                    str(corpus / "librispeech" / "real" / "a.flac")], check=True)
    speech, rate = sf.read(corpus / "librispeech" / "real" / "a.flac")
    room = np.random.default_rng(0).normal(0.0, 0.002, len(speech))  # a recording's noise floor
    sf.write(corpus / "librispeech" / "real" / "a.flac", speech + room, rate)
    with (corpus / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source", "system", "speaker", "duration_s", "licence", "origin"])
        writer.writerow(["librispeech/real/a.flac", "real", "librispeech", "bonafide", "s1", "4.0", "CC BY 4.0", "x"])
    return corpus


@pytest.mark.parametrize(("name", "mode"), [("codec2", m) for m in zoo.Codec2.modes] + [("lpcnet", "freedv2020")])
def test_copy_synthesis_keeps_the_words_and_changes_the_signal(name: str, mode: str, real_speech: Path,
                                                               vad: SileroVad) -> None:
    real, _ = sf.read(real_speech / "librispeech" / "real" / "a.flac", dtype="float32")
    fake, rate = zoo.GENERATORS[name].resynthesise(real, mode)
    fake16 = _to_16k(fake, rate)
    assert abs(len(fake16) - len(real)) < 0.05 * 16000  # same duration (within a frame)
    assert total_duration(vad(fake16)) > 0.5 * total_duration(vad(real))
    n = min(len(fake16), len(real))
    assert not np.allclose(fake16[:n], real[:n], atol=1e-3)


def test_make_zoo_plans_reproducibly_and_writes_its_manifest(real_speech: Path, tmp_path: Path) -> None:
    reals = make_zoo.read_sources(real_speech)
    first = make_zoo.plan(["pico", "flite", "codec2"], per_family=6, seed=3, reals=reals)
    assert first == make_zoo.plan(["pico", "flite", "codec2"], per_family=6, seed=3, reals=reals)
    assert first != make_zoo.plan(["pico", "flite", "codec2"], per_family=6, seed=4, reals=reals)
    families = {job.family for job in first}
    assert families == {"pico_hmm", "clustergen", "diphone", "codec2"}

    out = tmp_path / "zoo"
    argv = ["--corpus", str(real_speech), "--output-dir", str(out), "--generators", "pico", "codec2",
            "--per-family", "3", "--seed", "1"]
    assert make_zoo.main(argv) == 0
    with (out / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6  # 3 Pico utterances over its two voices; the one real through each of codec2's 3 modes
    for row in rows:
        assert row["label"] == "fake" and row["version"] and row["licence"]
        info = sf.info(out / row["path"])
        assert info.samplerate == int(row["sample_rate"])
        fake = sf.read(out / row["path"])[0]
        room = sf.read(real_speech / row["room"])[0]
        level = 20 * np.log10(np.sqrt(np.mean(fake**2)) / np.sqrt(np.mean(room**2)))
        assert abs(level) < 1.5  # the room's loudness (the background adds a little)
        frames = fake[: len(fake) // 160 * 160].reshape(-1, 160)
        assert (np.abs(frames).max(axis=1) > 0).all()  # the room's background: no digital silence
        if row["generator"] == "pico":
            assert row["text"] and row["text_source"] and row["speaker"] == f"pico/{row['voice']}"
        else:
            assert row["origin"] == "librispeech/real/a.flac" and row["speaker"] == "s1"
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    assert make_zoo.main(argv) == 0  # resumes: nothing redone
    assert stamp == {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}


def test_trim_edges_cuts_synthesiser_padding_to_what_readings_keep() -> None:
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)
    padded = np.concatenate([np.zeros(rate), tone, np.zeros(rate)])
    trimmed = make_zoo.trim_edges(padded, rate, np.random.default_rng(0))
    lead = np.flatnonzero(np.abs(trimmed) > 0.01)[0] / rate
    trail = (len(trimmed) - 1 - np.flatnonzero(np.abs(trimmed) > 0.01)[-1]) / rate
    assert 0.04 <= lead <= 0.41 and trail <= 0.16 and len(trimmed) < len(padded)


def test_the_shortcut_guard_finds_a_band_limited_family() -> None:
    from soundsentry.training import shortcuts

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(3 * 16000) * 0.05
    narrow = resample_poly(resample_poly(noise, 1, 2), 2, 1)  # through 8 kHz: nothing above 4 kHz
    wide, cut = shortcuts.describe(noise), shortcuts.describe(narrow)
    assert wide["band_edge_hz"] > 7000 and 3500 < cut["band_edge_hz"] < 5000
    assert abs(wide["duration_s"] - 3.0) < 0.01 and wide["lead_silence_s"] == 0.0
    x = np.array([[shortcuts.describe(s)[f] for f in shortcuts.FEATURES] for s in
                  [rng.standard_normal(16000) * 0.05 for _ in range(20)]
                  + [resample_poly(rng.standard_normal(8000) * 0.05, 2, 1) for _ in range(20)]])
    y = np.array([0] * 20 + [1] * 20)
    scores = shortcuts.cross_validated_scores(x, y, np.arange(40))
    from soundsentry.evaluation.metrics import eer

    assert eer(y, scores) < 0.1  # the guard sees the bandwidth shortcut
