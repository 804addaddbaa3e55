"""The upper-band flatness scorer: features on signals whose flatness is known, artefact round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundsentry.datasets import AudioItem
from soundsentry.errors import ModelLoadError
from soundsentry.models.flatness import FlatnessFeatures, FlatnessScorer, flatness_features
from soundsentry.training.train_flatness import file_rows, fit_flatness_model

SR = 16000


def _pulse_train(f0: float = 200.0, seconds: float = 2.0) -> np.ndarray:
    x = np.zeros(int(seconds * SR))
    x[:: int(SR / f0)] = 1.0  # harmonics of f0 up to Nyquist: a line spectrum
    return x


def test_noise_is_flat_and_harmonics_are_not() -> None:
    noise = flatness_features(np.random.default_rng(0).standard_normal(2 * SR))
    harmonic = flatness_features(_pulse_train() + 1e-4 * np.random.default_rng(1).standard_normal(2 * SR))
    assert noise.shape == harmonic.shape == (4,)
    assert np.all(np.abs(noise - np.exp(-np.euler_gamma)) < 0.05)  # white noise: e^-γ ≈ 0.56 per frame
    assert np.all(harmonic < 0.2)


def test_features_ignore_gain_and_survive_tiny_input() -> None:
    x = _pulse_train(seconds=1.0) + 0.05 * np.random.default_rng(2).standard_normal(SR)
    assert np.allclose(flatness_features(x), flatness_features(0.01 * x), atol=1e-4)
    assert np.isfinite(flatness_features(np.zeros(100))).all()


def test_scorer_round_trip_and_load_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = np.r_[rng.normal(0.2, 0.05, (40, 4)), rng.normal(0.5, 0.05, (40, 4))]
    labels = np.r_[np.zeros(40), np.ones(40)].astype(int)
    scorer = FlatnessScorer(fit_flatness_model(rows, labels), FlatnessFeatures(), {"note": "test"})
    scorer.save(tmp_path / "flatness.joblib")
    loaded = FlatnessScorer.load(tmp_path / "flatness.joblib")
    noise, harmonic = np.random.default_rng(4).standard_normal(2 * SR), _pulse_train()
    assert np.allclose(loaded.score_many([noise, harmonic]), scorer.score_many([noise, harmonic]))
    assert loaded.score_many([noise])[0] > 0.5 > loaded.score_many([harmonic])[0]
    assert loaded.metadata == {"note": "test"} and loaded.score_many([]).size == 0
    with pytest.raises(ModelLoadError, match="missing"):
        FlatnessScorer.load(tmp_path / "absent.joblib")
    (tmp_path / "bad.joblib").write_bytes(b"not joblib")
    with pytest.raises(ModelLoadError, match="cannot read"):
        FlatnessScorer.load(tmp_path / "bad.joblib")


def test_file_rows_read_files_and_augment_reproducibly(tmp_path: Path) -> None:
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.random.default_rng(5).standard_normal(SR) * 0.1, SR)
    items = [AudioItem(tmp_path / "a.wav", 1, speaker="s")]
    rows, labels, owners = file_rows(items, augmented_variants=2, seed=7)
    again, _, _ = file_rows(items, augmented_variants=2, seed=7)
    assert rows.shape == (3, 4) and labels.tolist() == [1, 1, 1] and owners == items * 3
    assert np.array_equal(rows, again)


def test_file_rows_add_random_crops(tmp_path: Path) -> None:
    import soundfile as sf

    # white noise for 2 s, then a harmonic tone: a 1 s crop sees one or the other, never the mix
    t = np.arange(2 * SR) / SR
    tone = sum(np.sin(2 * np.pi * f * t) for f in range(4100, 8000, 200)) * 0.01
    sf.write(tmp_path / "a.wav", np.r_[np.random.default_rng(5).standard_normal(2 * SR) * 0.1, tone], SR)
    sf.write(tmp_path / "short.wav", np.random.default_rng(6).standard_normal(SR // 2) * 0.1, SR)
    items = [AudioItem(tmp_path / "a.wav", 0, speaker="s"), AudioItem(tmp_path / "short.wav", 1, speaker="s")]
    rows, labels, owners = file_rows(items, crops_s=(1.0,), seed=3)
    assert rows.shape == (4, 4) and labels.tolist() == [0, 0, 1, 1] and owners == [items[0]] * 2 + [items[1]] * 2
    assert not np.allclose(rows[0], rows[1])  # the crop is not the whole file
    np.testing.assert_allclose(rows[2], rows[3])  # a file shorter than the crop is used whole
    np.testing.assert_array_equal(rows, file_rows(items, crops_s=(1.0,), seed=3)[0])  # seeded per file
