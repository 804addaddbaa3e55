"""Upper-band spectral flatness: a small, explainable scorer for neural-vocoder speech.

Neural vocoders rebuild the 4-8 kHz band of speech from a coarse mel spectrogram, and what they put
there is noisier than real speech: the harmonics a real voice keeps up to 8 kHz in voiced sounds
are smeared into noise. Spectral flatness (geometric over arithmetic mean of the power spectrum,
1 for white noise, near 0 for a line spectrum) measures exactly that. Measured on
``../shared/devset`` (never trained on): the mean flatness of the 7-8 kHz band alone separates fakes
from reals with ROC-AUC 0.66-0.85 in each of its three sources, and a logistic regression on the
four 1 kHz sub-bands of 4-8 kHz, trained only on corpus reals and the upper-band fakes of
``scripts.make_band_spoofs``, scores a pooled EER of 34 %, better than the CNN-Transformer
(data/MODEL_CARD.md).

Features (:func:`flatness_features`): STFT with a 32 ms Hann window and an 8 ms hop; the frames
whose energy is at or above the segment's 40th percentile (speech, not pauses); for each 1 kHz
sub-band of 4-8 kHz, the flatness of each such frame, averaged. Gain does not change them.

Artefact (``data/flatness.joblib``): ``{"format", "model" (StandardScaler + LogisticRegression),
"features", "metadata"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from scipy import signal

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError

FLATNESS_FILE = "flatness.joblib"
FORMAT = "soundsentry.flatness/1"


@dataclass(frozen=True)
class FlatnessFeatures:
    n_fft: int = 512
    hop_length: int = 128
    low_hz: float = 4000.0
    high_hz: float = 8000.0
    n_subbands: int = 4
    speech_percentile: float = 40.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flatness_features(samples: np.ndarray, features: FlatnessFeatures = FlatnessFeatures()) -> np.ndarray:
    """(n_subbands,) mean spectral flatness of each sub-band over the louder frames of ``samples``."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64))
    x = x - x.mean() if x.size else x
    x = x / max(float(np.sqrt(np.mean(x**2))) if x.size else 0.0, 1e-9)  # unit RMS: the features ignore gain
    if x.size < features.n_fft:
        x = np.pad(x, (0, features.n_fft - x.size))
    _, _, spectrum = signal.stft(x, SAMPLE_RATE, nperseg=features.n_fft,
                                 noverlap=features.n_fft - features.hop_length, boundary=None, padded=False)
    power = np.abs(spectrum) ** 2 + 1e-12
    energy = power.sum(axis=0)
    frames = power[:, energy >= np.percentile(energy, features.speech_percentile)]
    frequencies = np.fft.rfftfreq(features.n_fft, 1.0 / SAMPLE_RATE)
    bins = np.flatnonzero((frequencies > features.low_hz) & (frequencies <= features.high_hz))
    values = []
    for band in np.array_split(bins, features.n_subbands):
        sub = frames[band]
        values.append(float(np.mean(np.exp(np.mean(np.log(sub), axis=0)) / np.mean(sub, axis=0))))
    return np.array(values, dtype=np.float64)


class FlatnessScorer:
    """P(fake) of audio segments from their upper-band flatness; thread-safe (read-only model)."""

    def __init__(self, model: Any, features: FlatnessFeatures, metadata: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.features = features
        self.metadata = dict(metadata or {})

    @classmethod
    def load(cls, path: Path) -> FlatnessScorer:
        try:
            bundle = joblib.load(path)
            if bundle.get("format") != FORMAT:
                raise ValueError(f"format {bundle.get('format')!r}, expected {FORMAT!r}")
            return cls(bundle["model"], FlatnessFeatures(**bundle["features"]), bundle.get("metadata"))
        except FileNotFoundError:
            raise ModelLoadError(f"flatness scorer {path} is missing; restore it from git (`git checkout -- data/`) "
                                 "or retrain it with `python -m scripts.train_flatness`") from None
        except Exception as error:
            raise ModelLoadError(f"cannot read the flatness scorer {path}: {error}") from error

    def save(self, path: Path) -> None:
        joblib.dump({"format": FORMAT, "model": self.model, "features": self.features.to_dict(),
                     "metadata": self.metadata}, path)

    def score_many(self, segments: Sequence[np.ndarray]) -> np.ndarray:
        if not segments:
            return np.zeros(0)
        rows = np.stack([flatness_features(s, self.features) for s in segments])
        return self.model.predict_proba(rows)[:, 1]

    def info(self) -> dict[str, Any]:
        return {"features": self.features.to_dict(), "metadata": self.metadata}
