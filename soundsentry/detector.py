"""The one path from audio to report, shared by the API, the CLI and the batch evaluator.

    waveform ─► VAD ─► speakers (optional) ─► scoring segments ─┬► CNN-Transformer ─────┬► fusion ─► roll-up ─► Report
                                                                 ├► upper-band flatness ─┤
                                                                 └► TKAN + MLP ──────────┘

The scorers (:mod:`soundsentry.scorers`) share one contract; the fusion (``data/fusion.json``,
:mod:`soundsentry.fusion`) turns their P(fake) into one calibrated P(fake) and carries the
thresholds. Only the members it weighs are loaded and computed; without a fusion the directory's one
stand-alone scorer (the TKAN classifier) scores alone with its own thresholds.

TKAN's artefacts may live apart from the others (``DetectorConfig.tkan_dir``, e.g. a classifier
trained on pyannote's x-vector in ``model/tkan-xvector``): the speaker network TKAN reads is the one
its feature definition names (:mod:`soundsentry.models.layers`), while the embedded diarizer keeps the
Resemblyzer encoder.

Usage
-----
>>> detector = Detector.load()                      # shipped models in data/
>>> report = detector.predict_bytes(data, filename="chunk.webm", use_diarization=False)
>>> report.serialize()["overall"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pyannote.core import Annotation, Segment, Timeline

from soundsentry.audio import DecodeLimits, Waveform, decode_audio
from soundsentry.bandwidth import BAND_LIMITED_HZ, band_edge_hz
from soundsentry.constants import DEFAULT_DATA_DIR
from soundsentry.deadline import Deadline
from soundsentry.fusion import Fusion
from soundsentry.models.resemblyzer import SpeakerNetwork
from soundsentry.report import Report, SegmentResult, SpeakerResult, Zone, without_paths
from soundsentry.rollup import (
    CATEGORIES,
    ROLLUP_FILE,
    ConversationRollup,
    duration_category,
    label,
    load_rollup,
    overall_verdict,
    roll_up_speakers,
    weighted_mean,
)
from soundsentry.scorers import REGISTRY, LoadContext, Scorer, load_fusion, load_members, thresholds_of, uncertain_from
from soundsentry.speech.diarization import (
    BackendChoice,
    DiarizerConfig,
    SpeechBackends,
    load_speech_backends,
    speaker_embeddings,
)
from soundsentry.speech.segments import ScoringSegment, SegmentConfig, scoring_segments, single_speaker_annotation
from soundsentry.speech.vad import VadConfig, find_speech, total_duration

T = TypeVar("T")
logger = logging.getLogger(__name__)


BAND_LIMITED_MESSAGE = (
    "This audio carries nothing above {:.1f} kHz (telephone audio, or coded at 8 kHz). The detector reads "
    "the 4-8 kHz band, so this verdict is unreliable: send the original recording at 16 kHz or more."
)


@dataclass(frozen=True)
class DetectorConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    min_speech_s: float = 0.5  # less speech than this → "No Speech"
    min_speaker_speech_s: float = 1.0  # a secondary speaker needs this much to count overall
    vad: VadConfig = field(default_factory=VadConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    diarizer: DiarizerConfig = field(default_factory=DiarizerConfig)
    # "auto": pyannote when a pipeline is in pyannote_dir (never downloaded), else embedded
    diarization_backend: BackendChoice = "auto"
    pyannote_dir: Path | None = None  # default model/speaker-diarization-community-1
    # spectral-gating noise reduction (noisereduce) before VAD and scoring; off: see data/MODEL_CARD.md
    denoise: bool = False
    # TKAN scaler + classifier from here instead of data_dir (e.g. model/tkan-xvector); the fusion, the
    # CNN-Transformer and the flatness scorer still come from data_dir
    tkan_dir: Path | None = None
    # pyannote's x-vector checkpoint for TKAN artefacts that read it; default model/embedding
    xvector_dir: Path | None = None

    @property
    def tkan_artefacts_dir(self) -> Path:
        return self.tkan_dir if self.tkan_dir is not None else self.data_dir


class _Timer:
    """Times each stage; with a deadline, refuses to start a stage once it has passed."""

    def __init__(self, deadline: Deadline | None = None) -> None:
        self.ms: dict[str, float] = {}
        self.deadline = deadline

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.deadline is not None:
            self.deadline.check()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


class Detector:
    """Holds the loaded models; ``predict`` is thread-safe (no per-request state on ``self``).

    ``speech``: the VAD and diarizer (:class:`~soundsentry.speech.diarization.Vad`, ``Diarizer``);
    ``members``: the scorers the fusion weighs, by member name; ``fusion``: ``None`` for single-member
    mode (one scorer with its own thresholds).
    """

    def __init__(
        self, config: DetectorConfig, speech: SpeechBackends, members: Mapping[str, Scorer],
        fusion: Fusion | None = None, rollup: ConversationRollup | None = None,
    ) -> None:
        self.config = config
        self.speech = speech
        self.vad = speech.vad
        self.diarizer = speech.diarizer
        self.fusion = fusion
        self.rollup = rollup
        self.members = dict(members)
        expected = fusion.active_members if fusion is not None else tuple(self.members)[:1]
        if tuple(self.members) != expected:
            raise ValueError(f"the fusion weighs {expected} but the scorers given are {tuple(self.members)}")
        self.thresholds = thresholds_of(fusion, self.members)
        self.uncertain_from = uncertain_from(fusion, self.thresholds)
        missing = set(CATEGORIES) - set(self.thresholds)
        if missing:
            raise ValueError(f"thresholds missing for duration categories {sorted(missing)}")
        self.models = self._describe_models()  # once: it goes into every report
        # the speakers' d-vectors of a session's chunk (predict(embed_speakers=True)) are computed on one of
        # these threads while the scorers run: one stream's chunk costs the longer of the two, not their sum
        self._beside = ThreadPoolExecutor(max_workers=2, thread_name_prefix="soundsentry-embed")

    @classmethod
    def load(cls, config: DetectorConfig = DetectorConfig()) -> Detector:
        """Load every model once. Raises :class:`~soundsentry.errors.ModelLoadError`.

        The VAD and diarizer come from ``config.diarization_backend`` (see
        :func:`~soundsentry.speech.diarization.load_speech_backends`): pyannote's pipeline and VAD when one
        is available, else Silero VAD and the embedded diarizer. The scorers are the ones the fusion in
        ``config.data_dir`` weighs (:func:`~soundsentry.scorers.load_members`), TKAN's from
        ``config.tkan_artefacts_dir``.
        """
        network = SpeakerNetwork()
        fusion = load_fusion(config.data_dir)
        context = LoadContext(directories={"tkan": config.tkan_artefacts_dir}, xvector_dir=config.xvector_dir,
                              resemblyzer=network)
        members = load_members(fusion, config.data_dir, context)
        if config.tkan_dir is not None and "tkan" not in members:
            logger.warning("TKAN artefacts in %s are not scored: the fusion in %s gives TKAN no weight",
                           config.tkan_dir, config.data_dir)
        speech = load_speech_backends(
            config.diarization_backend, network=network, vad_config=config.vad,
            diarizer_config=config.diarizer, pyannote_dir=config.pyannote_dir,
        )
        return cls(config, speech, members, fusion, load_rollup(config.data_dir))

    def _describe_models(self) -> dict[str, str]:
        """Names and versions of what is loaded, as reports and ``/info`` show them (no server paths)."""
        network = self.speech.network
        lines = {"vad": self.vad.name,
                 "speaker_network": network.name if network is not None else "none (the pipeline's own)"}
        for name, scorer in REGISTRY.items():
            lines |= self.members[name].models() if name in self.members else dict(scorer.unused)
        lines |= {
            "fusion": (
                " + ".join(f"{w:.2f}·{m}" for m, w in zip(self.fusion.members, self.fusion.weights, strict=True))
                if self.fusion is not None else f"none ({next(iter(self.members))} alone)"
            ),
            "diarization": self.diarizer.name,
            "rollup": (f"contrast between speakers ({ROLLUP_FILE})" if self.rollup is not None
                       else "each speaker alone"),
            "diarization_backend": self.speech.describe(),
        }
        return without_paths(lines)

    def predict_bytes(
        self, data: bytes, *, filename: str | None = None, use_diarization: bool = False,
        limits: DecodeLimits = DecodeLimits(), deadline: Deadline | None = None, embed_speakers: bool = False,
    ) -> Report:
        """Decode an upload and :meth:`predict` it; decoding errors are :class:`InputError`s.

        ``deadline`` bounds the whole of it: decoding checks it between packets, the analysis between
        stages, and :class:`~soundsentry.errors.ProcessingTimeoutError` is raised once it has passed."""
        start = time.perf_counter()
        waveform = decode_audio(data, filename=filename, limits=limits, deadline=deadline)
        decode_ms = (time.perf_counter() - start) * 1000
        report = self.predict(waveform, use_diarization=use_diarization, deadline=deadline,
                              embed_speakers=embed_speakers)
        report.timings_ms["decode"] = decode_ms
        return report

    def predict(
        self, waveform: Waveform, *, use_diarization: bool = False, deadline: Deadline | None = None,
        turns: Annotation | None = None, embed_speakers: bool = False,
    ) -> Report:
        """``turns``: speaker turns known beforehand (an RTTM's): they replace the diarizer, and scoring
        keeps the part of them the VAD finds speech in. ``embed_speakers``: the report also carries each
        speaker's d-vector (``speaker_embeddings``, what :mod:`soundsentry.sessions` links speakers across
        chunks by; none when the speaker network is pyannote's own)."""
        timer = _Timer(deadline)
        samples = waveform.samples
        if self.config.denoise:
            with timer.stage("denoise"):
                samples = _denoise(samples)
        with timer.stage("vad"):
            regions, probabilities = find_speech(self.vad, samples)
        speech = total_duration(regions)
        segments: list[ScoringSegment] = []
        if speech >= self.config.min_speech_s:
            with timer.stage("diarization" if use_diarization else "segmentation"):
                if turns is not None:
                    annotation = turns.crop(Timeline([Segment(r.start, r.end) for r in regions]), mode="intersection")
                elif use_diarization:
                    annotation = self.diarizer(samples, regions, speech_probabilities=probabilities)
                else:
                    annotation = single_speaker_annotation(regions)
                segments = scoring_segments(annotation, self.config.segments)
        if not segments:
            return self._no_speech(waveform, speech, use_diarization, timer.ms)

        pending = None
        if embed_speakers and self.speech.network is not None:  # beside the scorers: the chunk waits for the longer
            pending = self._beside.submit(_timed, speaker_embeddings, self.speech.network, samples, segments)
        member_scores = self._score(samples, segments, timer)
        probabilities = (
            self.fusion.combine(member_scores) if self.fusion is not None else next(iter(member_scores.values()))
        )
        thresholds = self.thresholds
        results = []
        for index, (segment, probability) in enumerate(zip(segments, probabilities, strict=True)):
            threshold = thresholds[duration_category(segment.duration)]
            results.append(
                SegmentResult(
                    speaker=segment.speaker,
                    start=segment.start,
                    end=segment.end,
                    probability=float(probability),
                    result=label(float(probability), threshold),
                    scores={name: float(values[index]) for name, values in member_scores.items()},
                )
            )
        speakers = roll_up_speakers(results, thresholds, self.config.min_speaker_speech_s, self.uncertain_from)
        mean_probability = weighted_mean([s.probability for s in results], [s.duration for s in results])
        speakers, (overall, certainty, zone) = self.judge_speakers(speakers, mean_probability)
        embeddings = {}
        if pending is not None:
            embeddings, timer.ms["speaker_embedding"] = pending.result()
        scored = sum(s.duration for s in results)
        category = duration_category(scored)
        with timer.stage("bandwidth"):
            edge = band_edge_hz(samples, [(s.start, s.end) for s in segments])
        return Report(
            overall=overall,
            mean_probability=mean_probability,
            confidence=certainty,
            segments=results,
            speakers=speakers,
            use_diarization=use_diarization,
            category=category,
            duration=waveform.duration_s,
            speech_duration=speech,
            threshold=thresholds[category],
            timings_ms=timer.ms,
            models=self.models,
            band_edge_hz=edge,
            zone=zone,
            message=BAND_LIMITED_MESSAGE.format(edge / 1000) if edge < BAND_LIMITED_HZ else None,
            speaker_embeddings=embeddings,
        )

    def judge_speakers(
        self, speakers: list[SpeakerResult], mean_probability: float,
    ) -> tuple[list[SpeakerResult], tuple[str, float, Zone]]:
        """The speakers judged together (the contrast roll-up, when loaded) and the overall verdict
        (verdict, confidence, zone); ``mean_probability``: the recording's P(fake) over all its segments."""
        if self.rollup is not None:
            speakers = self.rollup.apply(speakers, mean_probability)
        return speakers, overall_verdict(speakers)

    def _score(self, samples: np.ndarray, segments: list[ScoringSegment], timer: _Timer) -> dict[str, np.ndarray]:
        """(segment,) P(fake) of each member, timed as a stage of its name."""
        scores = {}
        for name, scorer in self.members.items():
            with timer.stage(name):
                scores[name] = scorer.score(samples, segments)
        return scores

    def _no_speech(self, waveform: Waveform, speech: float, use_diarization: bool, timings: dict) -> Report:
        return Report(
            overall="No Speech",
            mean_probability=0.0,
            confidence=0.0,
            segments=[],
            speakers=[],
            use_diarization=use_diarization,
            category=duration_category(speech),
            duration=waveform.duration_s,
            speech_duration=speech,
            threshold=self.thresholds[duration_category(speech)],
            message=(
                f"Found {speech:.1f} s of speech in {waveform.duration_s:.1f} s of audio; at least "
                f"{self.config.min_speech_s:.1f} s in one stretch of {self.config.segments.min_duration_s:.1f} s "
                "or more is needed. Send a recording where someone speaks."
            ),
            timings_ms=timings,
            models=self.models,
        )

    def info(self) -> dict[str, Any]:
        """What is loaded: models, backends, thresholds, each scorer's definition and training (no server paths)."""
        return without_paths({
            "models": self.models,
            "thresholds": self.thresholds,
            "uncertain_from": self.uncertain_from,
            "fusion": self.fusion.to_dict() if self.fusion is not None else None,
            "rollup": self.rollup.to_dict() if self.rollup is not None else None,
            "members": {name: scorer.info() for name, scorer in self.members.items()},
            "config": {
                "min_speech_s": self.config.min_speech_s,
                "min_speaker_speech_s": self.config.min_speaker_speech_s,
                "segment_min_s": self.config.segments.min_duration_s,
                "segment_max_s": self.config.segments.max_duration_s,
            },
        })


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``function(*args)`` and the milliseconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, (time.perf_counter() - start) * 1000


def _denoise(samples: np.ndarray) -> np.ndarray:
    import noisereduce

    if samples.size < 2048:  # shorter than its STFT: nothing to estimate the noise from
        return samples
    return noisereduce.reduce_noise(y=samples, sr=16000, stationary=True, n_jobs=1).astype(np.float32)
