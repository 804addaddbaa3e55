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

import zlib
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


def file_rows(
    items: Sequence[Any], features: FlatnessFeatures = FlatnessFeatures(), *, augmented_variants: int = 0,
    crops_s: Sequence[float] = (), seed: int = 0, progress=lambda x: x,
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Feature rows of labelled files (``AudioItem``s): each file as it is and ``augmented_variants``
    times through a random label-blind augmentation chain (codecs, noise, reverb, RawBoost...), and
    for each of those a random crop of each duration in ``crops_s`` (a file no longer than the crop
    is used whole). The shipped scorer uses no augmented copies: on the devset they made it worse, in
    the browser condition too (data/NOTES.md). Returns (rows, labels, the item of each row)."""
    import soundfile as sf

    from soundsentry.augment import apply_augmentation, random_augmentation

    rows, labels, owners = [], [], []
    for item in progress(items):
        samples, rate = sf.read(item.path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{item.path}: {rate} Hz; training files must be 16 kHz")
        samples = samples.mean(axis=1)
        rng = np.random.default_rng([seed, zlib.crc32(str(item.path).encode())])  # not the order of work
        variants = [samples] + [apply_augmentation(samples, random_augmentation(rng, p_none=0.0), rng)
                                for _ in range(augmented_variants)]
        for variant in variants:
            for view in [variant] + [_random_crop(variant, seconds, rng) for seconds in crops_s]:
                rows.append(flatness_features(view, features))
                labels.append(item.label)
                owners.append(item)
    return np.stack(rows), np.array(labels), owners


def _random_crop(samples: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    length = int(round(seconds * SAMPLE_RATE))
    start = int(rng.integers(0, samples.size - length + 1)) if samples.size > length else 0
    return samples[start : start + length]


def fit_flatness_model(rows: np.ndarray, labels: np.ndarray, c: float = 1.0) -> Any:
    """StandardScaler + class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=1000)).fit(
        rows, labels)


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
