"""The result of one detection: plain dataclasses with ``serialize()`` to the JSON contract.

The JSON shape is the one in DESIGN.md that the browser extension reads (``overall``,
``mean_probability``, ``confidence``, ``details``, ``duration_config``), plus per-speaker results,
timings, model versions and ``audio`` (the band the speech carries: ``band_limited`` when the
upper-band scorers had nothing to read, with a ``message`` saying the verdict is unreliable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from soundsentry.bandwidth import BAND_LIMITED_HZ

Verdict = Literal["Real", "Fake", "No Speech"]
Zone = Literal["real", "uncertain", "fake"]

# An absolute filesystem path of two parts or more (POSIX, or Windows), inside a sentence; "/health" is not one.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s/\\,;:()'\"]+[/\\])+([^\s/\\,;:()'\"]*)")


def without_paths(value: Any) -> Any:
    """``value`` (a string, or dicts and lists of them) with every absolute path cut to its last part.

    What the service shows (reports, ``/info``, ``/health``) names models, files and versions, never
    where they lie on the server: ``/srv/app/model/speaker-diarization-community-1`` becomes
    ``speaker-diarization-community-1``.
    """
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "", value)
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_paths(item) for item in value)
    return value


@dataclass(frozen=True)
class SegmentResult:
    """One scored stretch of one speaker's speech. Times in seconds from the start of the upload."""

    speaker: str
    start: float
    end: float
    probability: float  # P(fake), fused
    result: Literal["Real", "Fake"]
    scores: dict[str, float] = field(default_factory=dict)  # per scorer, P(fake)

    @property
    def duration(self) -> float:
        return self.end - self.start

    def serialize(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "time": f"{self.start:.1f}-{self.end:.1f}s",
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "result": self.result,
            "probability": round(self.probability, 4),
            "scores": {name: round(value, 4) for name, value in self.scores.items()},
        }


@dataclass(frozen=True)
class SpeakerResult:
    """The roll-up of one speaker's segments, weighted by speech duration."""

    speaker: str
    speech_duration: float
    probability: float
    result: Literal["Real", "Fake"]
    category: str
    threshold: float
    segments: int
    counted: bool  # had enough speech to take part in the overall verdict
    zone: Zone = "real"  # soundsentry.rollup.zone
    # judged by contrast to the other speakers (soundsentry.rollup.ConversationRollup): its P(fake) alone
    own_probability: float | None = None

    def serialize(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "speech_duration": round(self.speech_duration, 3),
            "probability": round(self.probability, 4),
            "result": self.result,
            "zone": self.zone,
            "category": self.category,
            "threshold": round(self.threshold, 4),
            "segments": self.segments,
            "counted": self.counted,
            "own_probability": round(self.own_probability if self.own_probability is not None else self.probability, 4),
        }


@dataclass(frozen=True)
class Report:
    """Everything the service says about one upload."""

    overall: Verdict
    mean_probability: float
    confidence: float
    segments: list[SegmentResult]
    speakers: list[SpeakerResult]
    use_diarization: bool
    category: str
    duration: float  # decoded audio duration, seconds
    speech_duration: float
    threshold: float
    message: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    band_edge_hz: float | None = None  # of the scored speech (soundsentry.bandwidth); None: no speech
    zone: Zone | None = None  # soundsentry.rollup.overall_verdict; None: no speech
    # each speaker's unit d-vector when asked for (Detector.predict(embed_speakers=True)); not serialised
    speaker_embeddings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def band_limited(self) -> bool:
        return self.band_edge_hz is not None and self.band_edge_hz < BAND_LIMITED_HZ

    def rttm(self, uri: str = "upload") -> str:
        """The speaker turns as RTTM (``SPEAKER uri 1 start duration <NA> <NA> speaker <NA> <NA>``, one line
        per turn), for pyannote.metrics and other diarization tools. A turn is the scored segments of one
        speaker that follow each other without a gap; ``uri`` loses its whitespace."""
        uri = "_".join(uri.split()) or "upload"
        turns: list[list] = []
        for segment in sorted(self.segments, key=lambda s: (s.start, s.speaker)):
            last = next((t for t in reversed(turns) if t[0] == segment.speaker), None)
            if last is not None and last is turns[-1] and segment.start - last[2] < 1e-3:
                last[2] = max(last[2], segment.end)
            else:
                turns.append([segment.speaker, segment.start, segment.end])
        return "".join(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>\n"
                       for speaker, start, end in turns)

    def serialize(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "overall": self.overall,
            "mean_probability": round(self.mean_probability, 4),
            "confidence": round(self.confidence, 4),
            "details": [segment.serialize() for segment in self.segments],
            "speakers": [speaker.serialize() for speaker in self.speakers],
            "duration_config": {
                "use_diarization": self.use_diarization,
                "category": self.category,
                "duration": round(self.duration, 3),
                "speech_duration": round(self.speech_duration, 3),
                "threshold": round(self.threshold, 4),
            },
            "timings_ms": {name: round(value, 2) for name, value in self.timings_ms.items()},
            "models": dict(self.models),
        }
        if self.zone is not None:
            body["zone"] = self.zone
        if self.band_edge_hz is not None:
            body["audio"] = {"band_edge_hz": round(self.band_edge_hz), "band_limited": self.band_limited}
        if self.message is not None:
            body["message"] = self.message
        return body
