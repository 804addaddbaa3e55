"""Segment scores → per-speaker results → one verdict.

A speaker's probability is the mean of its segments' P(fake) weighted by segment duration; the
threshold is the one chosen on validation data for the duration category of that speaker's scored
speech. The upload is "Fake" when any speaker with enough speech is judged fake. Each speaker and
the upload also carry a zone (:func:`zone`): ``real``, ``uncertain`` or ``fake``.

With two or more counted speakers, a :class:`ConversationRollup` (``data/rollup.json``, fitted by
:mod:`soundsentry.training.fit_rollup`) judges each speaker again by its contrast to the others: the
speakers of one recording share its channel, codec and room, which move every speaker's score alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.fusion import logit
from soundsentry.report import SegmentResult, SpeakerResult, Zone

CATEGORIES = ("very_short", "short", "normal")


def duration_category(seconds: float) -> str:
    """``very_short`` < 3 s, ``short`` 3–6 s, ``normal`` >= 6 s."""
    if seconds < 3.0:
        return "very_short"
    if seconds < 6.0:
        return "short"
    return "normal"


def confidence(probability: float, threshold: float) -> float:
    """0 at the threshold, 1 at the far end (0 or 1) of the side the probability is on."""
    if probability >= threshold:
        span = 1.0 - threshold
        return 1.0 if span <= 0 else (probability - threshold) / span
    return 1.0 if threshold <= 0 else (threshold - probability) / threshold


def label(probability: float, threshold: float) -> str:
    return "Fake" if probability >= threshold else "Real"


def weighted_mean(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if values else 0.0


def zone(probability: float, threshold: float, uncertain_from: float) -> Zone:
    """``fake`` at or above the decision threshold; ``uncertain`` from ``uncertain_from`` (the equal-error
    point of the calibration) up to it: leaning fake, where real speech of unfamiliar sources also lands;
    ``real`` below both."""
    if probability >= threshold:
        return "fake"
    return "uncertain" if probability >= uncertain_from else "real"


def roll_up_speakers(
    segments: list[SegmentResult], thresholds: dict[str, float], min_speaker_speech_s: float,
    uncertain_from: dict[str, float] | None = None,
) -> list[SpeakerResult]:
    """One result per speaker. The speaker with most speech always counts, others need
    ``min_speaker_speech_s`` of scored speech to take part in the overall verdict. ``uncertain_from``:
    where each category's uncertain zone begins (default: no such zone)."""
    uncertain_from = uncertain_from or thresholds
    by_speaker: dict[str, list[SegmentResult]] = defaultdict(list)
    for segment in segments:
        by_speaker[segment.speaker].append(segment)
    longest = max(by_speaker, key=lambda s: sum(x.duration for x in by_speaker[s]), default=None)
    results = []
    for speaker, own in sorted(by_speaker.items()):
        speech = sum(x.duration for x in own)
        probability = weighted_mean([x.probability for x in own], [x.duration for x in own])
        results.append(speaker_result(speaker, speech, probability, len(own),
                                      speaker == longest or speech >= min_speaker_speech_s,
                                      thresholds, uncertain_from))
    return results


def speaker_result(
    speaker: str, speech: float, probability: float, segments: int, counted: bool,
    thresholds: dict[str, float], uncertain_from: dict[str, float],
) -> SpeakerResult:
    """A speaker with ``speech`` seconds of scored speech whose duration-weighted P(fake) is
    ``probability``, judged at the threshold of its duration category."""
    category = duration_category(speech)
    threshold = thresholds[category]
    return SpeakerResult(
        speaker=speaker,
        speech_duration=speech,
        probability=probability,
        result=label(probability, threshold),
        zone=zone(probability, threshold, uncertain_from[category]),
        category=category,
        threshold=threshold,
        segments=segments,
        counted=counted,
    )


def overall_verdict(speakers: list[SpeakerResult]) -> tuple[str, float, Zone]:
    """("Fake" | "Real", confidence, zone). Fake: the surest fake speaker; Real: the least sure real one;
    the zone is ``fake`` with a fake speaker, else ``uncertain`` when a counted speaker is."""
    counted = [s for s in speakers if s.counted]
    fakes = [s for s in counted if s.result == "Fake"]
    if fakes:
        return "Fake", max(confidence(s.probability, s.threshold) for s in fakes), "fake"
    leaning = any(s.zone == "uncertain" for s in counted)
    return "Real", min(confidence(s.probability, s.threshold) for s in counted), "uncertain" if leaning else "real"


# --------------------------------------------------------------------------------------------
# the recording-aware roll-up

ROLLUP_FILE = "rollup.json"
CONTRAST_FEATURES = ("own_logit", "gap_to_other_speakers", "gap_to_recording")


def contrast_features(own: np.ndarray, recording_probability: float) -> np.ndarray:
    """(speaker, 3) features of each counted speaker, from their own P(fake) ``own`` and the recording's
    duration-weighted P(fake) over all its segments: the speaker's logit, its margin over the highest of
    the other speakers, and its margin over the recording (the part of the score the channel explains).
    Needs two or more speakers."""
    logits = logit(own)
    if logits.size < 2:
        raise ValueError("contrast features need two or more speakers")
    others = np.array([np.max(np.delete(logits, i)) for i in range(logits.size)])
    return np.stack([logits, logits - others, logits - logit(recording_probability)], axis=1)


@dataclass(frozen=True)
class ConversationRollup:
    """P(fake) of a speaker given the recording: a logistic model over :data:`CONTRAST_FEATURES`.

    ``threshold``: a speaker at or above it is Fake; ``uncertain_from``: where its uncertain zone begins;
    ``metadata``: how it was fitted and what it scored (:mod:`soundsentry.training.fit_rollup`).
    """

    weights: tuple[float, ...]
    bias: float
    threshold: float
    uncertain_from: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.weights) != len(CONTRAST_FEATURES):
            raise ValueError(f"expected {len(CONTRAST_FEATURES)} weights, got {len(self.weights)}")
        if not 0.0 < self.threshold < 1.0 or not 0.0 < self.uncertain_from <= self.threshold:
            raise ValueError("need 0 < uncertain_from <= threshold < 1")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ np.asarray(self.weights) + self.bias)))

    def apply(self, speakers: list[SpeakerResult], recording_probability: float) -> list[SpeakerResult]:
        """The counted speakers judged by contrast when there are two or more; others as they were. A
        judged speaker keeps its own P(fake) as ``own_probability``."""
        counted = [s for s in speakers if s.counted]
        if len(counted) < 2:
            return speakers
        features = contrast_features(np.array([s.probability for s in counted]), recording_probability)
        judged = {
            s.speaker: dataclasses.replace(
                s, own_probability=s.probability, probability=float(p), threshold=self.threshold,
                result=label(float(p), self.threshold), zone=zone(float(p), self.threshold, self.uncertain_from),
            )
            for s, p in zip(counted, self.probabilities(features), strict=True)
        }
        return [judged.get(s.speaker, s) for s in speakers]

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(CONTRAST_FEATURES), "weights": list(self.weights), "bias": self.bias,
                "threshold": self.threshold, "uncertain_from": self.uncertain_from, "metadata": self.metadata}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationRollup:
        if list(data.get("features", [])) != list(CONTRAST_FEATURES):
            raise ValueError(f"roll-up features {data.get('features')} are not {list(CONTRAST_FEATURES)}")
        return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]), float(data["threshold"]),
                   float(data["uncertain_from"]), dict(data.get("metadata", {})))

    @classmethod
    def load(cls, path: Path) -> ConversationRollup:
        return cls.from_dict(json.loads(path.read_text()))


def load_rollup(directory: Path) -> ConversationRollup | None:
    """``directory/rollup.json``, or ``None`` (every speaker judged alone) when there is none."""
    path = directory / ROLLUP_FILE
    return ConversationRollup.load(path) if path.is_file() else None
