"""From audio to TKAN feature rows: the one path used by serving, training and evaluation.

:func:`segment_features` is what the detector calls on every scoring segment of an upload.
:func:`extract_item_rows` is what training calls on every labelled file: the file (augmented the
same way for both classes) goes through the same VAD → segments → TKAN path, once whole and once
as random crops of the durations the service sees (the browser's 4 s chunks, and shorter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from soundsentry.models.layers import TkanNetwork
from soundsentry.models.resemblyzer import SAMPLE_RATE
from soundsentry.models.tkan import FeatureSpec, segment_features
from soundsentry.speech.segments import crop_samples, speech_segments
from soundsentry.speech.vad import SileroVad


def augment_for_training(samples: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random label-independent chain (codec, noise, reverb, RawBoost...); returns (audio, name)."""
    from soundsentry.training.augment import apply_augmentation, random_augmentation

    chain = random_augmentation(rng)
    return apply_augmentation(samples, chain, rng), chain.describe()


@dataclass(frozen=True)
class ExtractionRecipe:
    """How training rows are made from one labelled file."""

    crop_durations_s: tuple[float, ...] = (4.0, 2.0)  # besides the whole file
    augment: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def extract_item_rows(
    samples: np.ndarray,
    *,
    network: TkanNetwork,
    vad: SileroVad,
    spec: FeatureSpec,
    recipe: ExtractionRecipe,
    rng: np.random.Generator,
    augment=None,
) -> list[dict]:
    """Feature rows for one file: ``{"features", "duration_s", "variant", "augmentation"}``.

    ``augment(samples, rng) -> (samples, name)`` perturbs the audio (codec, noise...). It is
    applied to each variant independently and must not depend on the label.
    """
    variants: list[tuple[str, np.ndarray]] = [("full", samples)]
    total_s = samples.size / SAMPLE_RATE
    for duration in recipe.crop_durations_s:
        if total_s > duration + 0.5:
            start = rng.uniform(0, total_s - duration)
            variants.append((f"crop{duration:g}", crop_samples(samples, start, start + duration)))
    rows = []
    for variant, audio in variants:
        name = "none"
        if augment is not None:
            audio, name = augment(audio, rng)
        segments = speech_segments(vad, audio)
        features = segment_features(network, spec, audio, segments)
        for segment, row in zip(segments, features, strict=True):
            rows.append({"features": row, "duration_s": segment.duration, "variant": variant, "augmentation": name})
    return rows
