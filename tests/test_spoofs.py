"""Spoof re-synthesis (soundsentry.training.spoofs) and codec/channel augmentation (soundsentry.training.augment).

The audio is an espeak-ng sentence made here and resampled to 16 kHz by ffmpeg.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsentry.training import augment, spoofs
from soundsentry.training.augment import Augmentation, AugmentStep, apply_augmentation, random_augmentation

SR = 16000
SENTENCE = "The quick brown fox jumps over the lazy dog, then rests beside the quiet river."


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("needs espeak-ng and ffmpeg")
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "x.wav", folder / "x16k.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), SENTENCE], check=True,
                   capture_output=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(raw), "-ac", "1",
                    "-ar", str(SR), "-c:a", "pcm_s16le", "-y", str(wav)], check=True,
                   capture_output=True)
    samples, rate = sf.read(wav, dtype="float32")
    assert rate == SR and samples.ndim == 1 and len(samples) > SR
    return samples


# --------------------------------------------------------------------------------------------
# spoofs


def test_registry_names() -> None:
    assert {"griffin_lim", "world", "lpc"} <= set(spoofs.SPOOF_METHODS)
    with pytest.raises(ValueError, match="unknown spoof method"):
        spoofs.resynthesize(np.zeros(SR, dtype=np.float32), "no_such_vocoder")


@pytest.mark.parametrize("method", sorted(spoofs.SPOOF_METHODS))
def test_spoof_method(speech: np.ndarray, method: str) -> None:
    fake = spoofs.SPOOF_METHODS[method](speech, sample_rate=SR, seed=3)
    assert fake.dtype == np.float32 and fake.ndim == 1
    assert abs(len(fake) - len(speech)) <= 256  # within one frame; in practice equal
    assert np.isfinite(fake).all()
    assert np.abs(fake).max() <= 1.0
    assert 0.8 < _rms(fake) / _rms(speech) < 1.25
    n = min(len(fake), len(speech))
    # it is a different signal, not a copy: a clear spectral distance (codecs give about 1-2 dB)
    assert spoofs.log_spectral_distance(speech[:n], fake[:n]) > 1.5
    assert not np.allclose(fake[:n], speech[:n], atol=1e-3)


def test_spoof_variants(speech: np.ndarray) -> None:
    for fake in (
        spoofs.lpc_resynthesis(speech, excitation="residual"),
        spoofs.world_resynthesis(speech, f0_method="dio", envelope_dims=None,
                                 code_aperiodicity=False),
        spoofs.griffin_lim_resynthesis(speech, n_mels=None, n_iter=8),
    ):
        assert len(fake) == len(speech) and np.isfinite(fake).all()
        assert 0.8 < _rms(fake) / _rms(speech) < 1.25


def test_spoofs_are_seeded(speech: np.ndarray) -> None:
    clip = speech[: SR]
    for method in ("griffin_lim", "lpc"):
        a = spoofs.resynthesize(clip, method, seed=1)
        b = spoofs.resynthesize(clip, method, seed=1)
        c = spoofs.resynthesize(clip, method, seed=2)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def _envelope(x: np.ndarray) -> np.ndarray:
    """Log energy of the 100-1000 Hz band, smoothed over 5 ms: what a vocoder keeps of a waveform."""
    from scipy.signal import butter, sosfiltfilt

    band = np.abs(sosfiltfilt(butter(4, [100, 1000], btype="band", fs=SR, output="sos"), x.astype(np.float64)))
    return np.log(np.convolve(band, np.ones(80) / 80, "same") + 1e-4)


def test_lpcnet_lines_up_with_its_input(speech: np.ndarray) -> None:
    # band_splice puts the real below the cut and the fake above: the fake must not lag the real
    fake = spoofs.lpcnet_resynthesis(speech)
    real, copy = _envelope(speech), _envelope(fake)

    def match(lag: int) -> float:  # the copy's envelope ``lag`` samples later than the real's
        early, late = (real, copy) if lag >= 0 else (copy, real)
        return float(np.corrcoef(early[: len(early) - abs(lag)], late[abs(lag):])[0, 1])

    # uncorrected, the copy lags by LPCNET_DELAY and match(0) is about 0.45; lined up, about 0.92, and no
    # lag within 25 ms does clearly better (LPCNet samples its output, so the peak moves by ~50 samples)
    best = max(range(-400, 401, 16), key=match)
    assert match(0) > 0.8 and match(0) > match(best) - 0.02, (
        f"LPCNet's copy matches its input best {best} samples later (LPCNET_DELAY is {spoofs.LPCNET_DELAY})")


@pytest.mark.parametrize("method", sorted(spoofs.SPOOF_METHODS))
def test_spoof_of_silence_and_short_input(method: str) -> None:
    silent = spoofs.SPOOF_METHODS[method](np.zeros(SR // 2, dtype=np.float32))
    assert len(silent) == SR // 2 and not silent.any()
    short = np.random.default_rng(0).standard_normal(300).astype(np.float32) * 0.1
    out = spoofs.SPOOF_METHODS[method](short)
    assert len(out) == 300 and np.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# augmentation

STEPS = [
    AugmentStep("gain", {"gain_db": -10.0}),
    AugmentStep("gain", {"gain_db": 10.0}),
    AugmentStep("lowpass", {"cutoff_hz": 3400.0, "order": 6}),
    AugmentStep("lowpass", {"cutoff_hz": 7000.0, "order": 6, "highpass_hz": 300.0}),
    AugmentStep("noise", {"snr_db": 10.0, "colour": "white"}),
    AugmentStep("noise", {"snr_db": 30.0, "colour": "pink"}),
    AugmentStep("reverb", {"rt60_s": 0.6, "drr_db": 0.0, "predelay_ms": 10.0}),
    AugmentStep("rawboost", {"algorithms": ("lnl", "isd", "ssi")}),
    AugmentStep("rawboost", {"algorithms": ("lnl",)}),
    AugmentStep("codec", {"codec": "mp3", "bitrate_kbps": 32, "sample_rate": 44100}),
]


@pytest.mark.parametrize("step", STEPS, ids=[step.describe() for step in STEPS])
def test_each_augmentation(speech: np.ndarray, step: AugmentStep) -> None:
    out = apply_augmentation(speech, step, np.random.default_rng(0))
    assert out.dtype == np.float32 and len(out) == len(speech)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert _rms(out) > 0.1 * _rms(speech)


@pytest.mark.parametrize(
    ("codec", "bitrate"), [("opus", 32), ("opus", 16), ("mp3", 64), ("aac", 96)]
)
def test_codec_roundtrip_keeps_length(
    speech: np.ndarray, codec: str, bitrate: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the codec's temp files go here
    out = augment.codec_roundtrip(speech, codec, bitrate)
    assert len(out) == len(speech) and np.isfinite(out).all()
    assert list(tmp_path.iterdir()) == []  # temporary directory removed
    # aligned (no codec delay left) and still the same speech
    corr = np.corrcoef(out, speech)[0, 1]
    assert corr > 0.8
    assert spoofs.log_spectral_distance(speech, out) < 4.0


def test_codec_rejects_unknown_name(speech: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        augment.codec_roundtrip(speech, "vorbis", 64)


def test_gain_avoids_clipping() -> None:
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    louder = augment.apply_gain(tone, 10.0)
    assert np.abs(louder).max() <= 0.99 + 1e-9
    quieter = augment.apply_gain(tone, -6.0)
    assert np.isclose(np.abs(quieter).max(), 0.5 * 10 ** (-6 / 20), rtol=1e-6)


def test_noise_snr() -> None:
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(4 * SR) / SR)
    for colour in ("white", "pink"):
        noisy = augment.add_noise(tone, 20.0, np.random.default_rng(0), colour=colour)
        snr = 10 * np.log10(np.sum(tone**2) / np.sum((noisy - tone) ** 2))
        assert abs(snr - 20.0) < 0.5


def test_lowpass_removes_high_band() -> None:
    noise = np.random.default_rng(0).standard_normal(2 * SR) * 0.1
    out = augment.band_limit(noise, 3400.0)
    spectrum_in = np.abs(np.fft.rfft(noise)) ** 2
    spectrum_out = np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    high = freqs > 5000
    assert 10 * np.log10(spectrum_in[high].sum() / spectrum_out[high].sum()) > 30


def _band_levels_db(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].sum() + 1e-20))


def test_band_splice_keeps_the_real_below_and_the_fake_above(speech: np.ndarray) -> None:
    fake = spoofs.griffin_lim_resynthesis(speech, sample_rate=SR, seed=0)
    spliced = spoofs.band_splice(speech, fake, 4000.0)
    assert spliced.shape == speech.shape and spliced.dtype == np.float32
    assert _rms(spliced) == pytest.approx(_rms(speech), rel=0.02)
    low_real, low_spliced = augment.band_limit(speech, 3500.0), augment.band_limit(spliced, 3500.0)
    assert np.corrcoef(low_real, low_spliced)[0, 1] > 0.99  # the real's own waveform below the cut
    assert np.corrcoef(speech - low_real, spliced - low_spliced)[0, 1] < 0.5  # not the real's above it
    above = _band_levels_db(spliced, 4500, 8000)
    assert abs(above - _band_levels_db(fake, 4500, 8000)) < 3.0  # the fake's level above the cut


def test_room_impulse_response_decays() -> None:
    response = augment.synthetic_room_impulse_response(0.4, np.random.default_rng(0))
    assert response[0] == 1.0
    tail = response[1:]
    first, last = tail[: len(tail) // 10], tail[-len(tail) // 10 :]
    assert 10 * np.log10(np.sum(first**2) / np.sum(last**2)) > 40


def test_random_augmentation_distribution() -> None:
    rng = np.random.default_rng(0)
    chains = [random_augmentation(rng) for _ in range(400)]
    none_share = np.mean([chain.is_identity for chain in chains])
    assert 0.17 < none_share < 0.33
    kinds = {step.kind for chain in chains for step in chain.steps}
    assert kinds == set(augment.STEP_KINDS)
    codecs = {step.params["codec"] for chain in chains for step in chain.steps
              if step.kind == "codec"}
    assert codecs == {"opus", "mp3", "aac"}
    for chain in chains:
        for step in chain.steps:
            if step.kind == "gain":
                assert -10 <= step.params["gain_db"] <= 10
            elif step.kind == "lowpass":
                assert 3400 <= step.params["cutoff_hz"] <= 7000
            elif step.kind == "noise":
                assert 10 <= step.params["snr_db"] <= 30
            elif step.kind == "reverb":
                assert 0.2 <= step.params["rt60_s"] <= 0.6
    # same seed, same chain: it depends on nothing but the rng
    assert random_augmentation(np.random.default_rng(0)) == chains[0]


def test_apply_is_reproducible_and_identity(speech: np.ndarray) -> None:
    chain = Augmentation((
        AugmentStep("reverb", {"rt60_s": 0.3}),
        AugmentStep("noise", {"snr_db": 15.0, "colour": "pink"}),
        AugmentStep("rawboost", {"algorithms": ("lnl", "ssi")}),
    ))
    a = apply_augmentation(speech, chain, np.random.default_rng(5))
    b = apply_augmentation(speech, chain, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    same = apply_augmentation(speech, Augmentation(), np.random.default_rng(5))
    np.testing.assert_array_equal(same, speech)
    assert "reverb" in chain.describe() and Augmentation().describe() == "none"


def test_band_spoofs_read_each_fake_beside_its_own_manifest(tmp_path: Path) -> None:
    """Two spoof folders may hold the same relative path (new vocoder outputs beside stale ones):
    each manifest's fakes must come from that manifest's folder."""
    import csv

    from soundsentry.training import make_band_spoofs

    rng = np.random.default_rng(0)
    corpus, stale, fresh = tmp_path / "corpus", tmp_path / "stale", tmp_path / "fresh"
    for folder in (corpus / "librispeech" / "real", stale / "melgan", fresh / "melgan"):
        folder.mkdir(parents=True)
    sf.write(corpus / "librispeech" / "real" / "a.flac", rng.standard_normal(16_000) * 0.1, 16_000)
    with (corpus / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "source", "system", "speaker"],
                                      ["librispeech/real/a.flac", "real", "librispeech", "bonafide", "s1"]])
    sf.write(stale / "melgan" / "a.flac", np.zeros(16_000), 16_000)  # an old output nobody lists any more
    sf.write(fresh / "melgan" / "a.flac", rng.standard_normal(16_000) * 0.1, 16_000)
    for folder, listed in ((stale, []), (fresh, ["melgan/a.flac"])):
        with (folder / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "source", "system", "speaker", "origin"])
            writer.writerows([[p, "fake", "resynth_melgan", "melgan", "s1", "librispeech/real/a.flac"] for p in listed])
    make_band_spoofs.main(["--spoofs", str(stale / "manifest.csv"), str(fresh / "manifest.csv"),
                           "--corpus", str(corpus), "--output-dir", str(tmp_path / "band")])
    spliced, _ = sf.read(tmp_path / "band" / "melgan_hf" / "a.flac")
    expected = spoofs.band_splice(sf.read(corpus / "librispeech" / "real" / "a.flac")[0],
                                  sf.read(fresh / "melgan" / "a.flac")[0], 4000.0)
    assert np.corrcoef(spliced, expected)[0, 1] > 0.99
