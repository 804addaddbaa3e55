"""Speaker turns → the segments we score.

Turns closer than ``merge_gap_s`` are merged (a breath is not a new turn), turns longer than
``max_duration_s`` are split into near-equal pieces (long stretches are scored piece by piece and
pooled by duration), and turns shorter than ``min_duration_s`` are dropped (too little audio for
the speaker network to say anything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyannote.core import Annotation, Segment

from soundsentry.constants import SAMPLE_RATE
from soundsentry.speech.vad import SileroVad, SpeechRegion

SINGLE_SPEAKER = "SPEAKER_00"


@dataclass(frozen=True)
class ScoringSegment:
    speaker: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SegmentConfig:
    merge_gap_s: float = 0.5
    min_duration_s: float = 0.8
    max_duration_s: float = 10.0


def single_speaker_annotation(regions: list[SpeechRegion], uri: str = "upload") -> Annotation:
    """All speech as one speaker, for requests without diarization."""
    annotation = Annotation(uri=uri)
    for index, region in enumerate(regions):
        annotation[Segment(region.start, region.end), index] = SINGLE_SPEAKER
    return annotation


def scoring_segments(annotation: Annotation, config: SegmentConfig = SegmentConfig()) -> list[ScoringSegment]:
    """Turn an annotation's speaker turns into scoring segments, sorted by start time."""
    segments: list[ScoringSegment] = []
    for speaker in annotation.labels():
        timeline = annotation.label_timeline(speaker, copy=False).support(collar=config.merge_gap_s)
        for turn in timeline:
            if turn.duration < config.min_duration_s:
                continue
            pieces = max(1, math.ceil(turn.duration / config.max_duration_s))
            step = turn.duration / pieces
            for i in range(pieces):
                segments.append(ScoringSegment(speaker, turn.start + i * step, turn.start + (i + 1) * step))
    return sorted(segments, key=lambda s: (s.start, s.speaker))


def crop_samples(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return samples[int(round(start_s * SAMPLE_RATE)) : int(round(end_s * SAMPLE_RATE))]


def speech_segments(
    vad: SileroVad, samples: np.ndarray, config: SegmentConfig = SegmentConfig()
) -> list[ScoringSegment]:
    """Scoring segments of a single-speaker recording (the no-diarization path)."""
    return scoring_segments(single_speaker_annotation(vad(samples)), config)
