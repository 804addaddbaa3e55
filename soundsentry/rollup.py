"""Segment scores → per-speaker results → one verdict.

A speaker's probability is the mean of its segments' P(fake) weighted by segment duration; the
threshold is the one chosen on validation data for the duration category of that speaker's scored
speech. The upload is "Fake" when any speaker with enough speech is judged fake. Each speaker and
the upload also carry a zone (:func:`zone`): ``real``, ``uncertain`` or ``fake``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

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
        category = duration_category(speech)
        threshold = thresholds[category]
        results.append(
            SpeakerResult(
                speaker=speaker,
                speech_duration=speech,
                probability=probability,
                result=label(probability, threshold),
                zone=zone(probability, threshold, uncertain_from[category]),
                category=category,
                threshold=threshold,
                segments=len(own),
                counted=speaker == longest or speech >= min_speaker_speech_s,
            )
        )
    return results


def overall_verdict(speakers: list[SpeakerResult]) -> tuple[str, float, Zone]:
    """("Fake" | "Real", confidence, zone). Fake: the surest fake speaker; Real: the least sure real one;
    the zone is ``fake`` with a fake speaker, else ``uncertain`` when a counted speaker is."""
    counted = [s for s in speakers if s.counted]
    fakes = [s for s in counted if s.result == "Fake"]
    if fakes:
        return "Fake", max(confidence(s.probability, s.threshold) for s in fakes), "fake"
    leaning = any(s.zone == "uncertain" for s in counted)
    return "Real", min(confidence(s.probability, s.threshold) for s in counted), "uncertain" if leaning else "real"
