"""The one path from audio to report, shared by the API, the CLI and the batch evaluator.

    waveform ─► VAD ─► speakers (optional) ─► scoring segments ─┬► TKAN + MLP ─────────┬► fusion ─► roll-up ─► Report
                                                                 ├► CNN-Transformer ────┤
                                                                 └► upper-band flatness ┘

The fusion (``data/fusion.json``, :mod:`soundsentry.fusion`) turns the members' P(fake) into one
calibrated P(fake) and carries the thresholds; without it the TKAN classifier scores alone with its
own thresholds. Members the fusion gives no weight are not computed.

TKAN's artefacts may live apart from the others (``DetectorConfig.tkan_dir``, e.g. a classifier
trained on pyannote's x-vector in ``model/tkan-xvector``): the speaker network TKAN reads is the one
its feature definition names (:mod:`soundsentry.networks`), while the embedded diarizer keeps the
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.audio import DecodeLimits, Waveform, decode_audio
from soundsentry.classifier import MODEL_FILE, SCALER_FILE, TkanArtifacts, load_tkan_artifacts
from soundsentry.deadline import Deadline
from soundsentry.diarization import BackendChoice, DiarizerConfig, EmbeddedDiarizer, load_speech_backends
from soundsentry.encoder import SpeakerNetwork
from soundsentry.errors import ModelLoadError
from soundsentry.features import crop_samples, segment_features
from soundsentry.flatness import FLATNESS_FILE, FlatnessScorer
from soundsentry.fusion import FUSION_FILE, Fusion, check_member_artefacts
from soundsentry.networks import TkanNetwork, load_tkan_network
from soundsentry.report import Report, SegmentResult, without_paths
from soundsentry.rollup import CATEGORIES, duration_category, label, overall_verdict, roll_up_speakers, weighted_mean
from soundsentry.segments import ScoringSegment, SegmentConfig, scoring_segments, single_speaker_annotation
from soundsentry.spectral import SpectralScorer
from soundsentry.vad import SileroVad, VadConfig, find_speech, total_duration

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TKAN_FILES = (SCALER_FILE, MODEL_FILE)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    min_speech_s: float = 0.5  # less speech than this → "No Speech"
    min_speaker_speech_s: float = 1.0  # a secondary speaker needs this much to count overall
    vad: VadConfig = field(default_factory=VadConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    diarizer: DiarizerConfig = field(default_factory=DiarizerConfig)
    # "auto": pyannote when a pipeline is in pyannote_dir (or HUGGING_FACE_TOKEN is set), else embedded
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
    """Holds the loaded models; ``predict`` is thread-safe (no per-request state on ``self``)."""

    def __init__(
        self,
        config: DetectorConfig,
        vad: SileroVad,
        network: SpeakerNetwork,
        tkan: TkanArtifacts,
        diarizer: EmbeddedDiarizer,
        fusion: Fusion | None = None,
        cnn: SpectralScorer | None = None,
        flatness: FlatnessScorer | None = None,
        tkan_network: TkanNetwork | None = None,
    ) -> None:
        """``network`` is the Resemblyzer encoder (the embedded diarizer's); ``tkan_network`` the
        network TKAN reads, by default ``network`` (it must be the one ``tkan.spec`` names)."""
        self.config = config
        self.vad = vad
        self.network = network
        self.tkan = tkan
        self.diarizer = diarizer
        self.fusion = fusion
        self.cnn = cnn
        self.flatness = flatness
        self.tkan_network = tkan_network if tkan_network is not None else network
        for member, scorer in (("cnn", cnn), ("flatness", flatness)):
            if fusion is not None and member in fusion.active_members and scorer is None:
                raise ValueError(f"the fusion weighs {member} but no {member} scorer was given")
        if "tkan" in self.members and self.tkan_network.name != tkan.spec.network:
            raise ValueError(
                f"the TKAN classifier reads {tkan.spec.network} but the TKAN network given is {self.tkan_network.name}"
            )
        self._tkan_network_text = self._describe_tkan_network()  # once: models go into every report
        missing = set(CATEGORIES) - set(self.thresholds)
        if missing:
            raise ValueError(f"thresholds missing for duration categories {sorted(missing)}")

    @classmethod
    def load(cls, config: DetectorConfig = DetectorConfig()) -> Detector:
        """Load every model once. Raises :class:`~soundsentry.errors.ModelLoadError`.

        The VAD and diarizer come from ``config.diarization_backend`` (see
        :func:`~soundsentry.diarization.load_speech_backends`): pyannote's pipeline and VAD when one
        is available, else Silero VAD and the embedded diarizer. The TKAN artefacts come from
        ``config.tkan_artefacts_dir``, and TKAN reads the network their feature definition names
        (loaded only when TKAN is scored).
        """
        network = SpeakerNetwork()
        tkan_dir = config.tkan_artefacts_dir
        tkan = load_tkan_artifacts(tkan_dir)
        fusion_path = config.data_dir / FUSION_FILE
        fusion = Fusion.load(fusion_path) if fusion_path.is_file() else None
        cnn = None
        if fusion is not None and "cnn" in fusion.active_members:
            cnn = _load_cnn(config.data_dir / "cnn_transformer.pt")
        flatness = None
        if fusion is not None and "flatness" in fusion.active_members:
            flatness = FlatnessScorer.load(config.data_dir / FLATNESS_FILE)
        if fusion is not None:
            _check_fusion_artefacts(fusion, config.data_dir, tkan_dir)
        tkan_network = None
        if fusion is None or "tkan" in fusion.active_members:
            tkan_network = _load_tkan_network(tkan, tkan_dir, config.xvector_dir, network)
        elif config.tkan_dir is not None:
            logger.warning("TKAN artefacts loaded from %s are not scored: %s gives TKAN no weight",
                           tkan_dir, fusion_path)
        backends = load_speech_backends(
            config.diarization_backend, network=network, vad_config=config.vad,
            diarizer_config=config.diarizer, pyannote_dir=config.pyannote_dir,
        )
        detector = cls(
            config=config,
            vad=backends.vad,
            network=network,
            tkan=tkan,
            diarizer=backends.diarizer,
            fusion=fusion,
            cnn=cnn,
            flatness=flatness,
            tkan_network=tkan_network,
        )
        detector.speech_backends = backends
        return detector

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision threshold per duration category: the fusion's, or the TKAN classifier's alone."""
        return dict(self.fusion.thresholds if self.fusion is not None else self.tkan.thresholds)

    @property
    def members(self) -> tuple[str, ...]:
        """The scorers computed for each segment."""
        return self.fusion.active_members if self.fusion is not None else ("tkan",)

    @property
    def models(self) -> dict[str, str]:
        """Names and versions of what is loaded, as reports and ``/info`` show them (no server paths)."""
        backends = getattr(self, "speech_backends", None)  # set by load(); absent on hand-built detectors
        return without_paths({
            "vad": self.vad.name,
            "speaker_network": self.network.name,
            "tkan_network": self._tkan_network_text,
            "tkan_classifier": f"mlp {self.tkan.spec.key}",
            "cnn_transformer": (
                f"{self.cnn.features.kind} {self.cnn.features.key}" if self.cnn is not None else "not used"
            ),
            "flatness": "4 sub-bands of 4-8 kHz, logistic regression" if self.flatness is not None else "not used",
            "fusion": (
                " + ".join(f"{w:.2f}·{m}" for m, w in zip(self.fusion.members, self.fusion.weights, strict=True))
                if self.fusion is not None else "none (TKAN alone)"
            ),
            "diarization": self.diarizer.name,
            "diarization_backend": backends.describe() if backends else type(self.diarizer).__name__,
        })

    def _describe_tkan_network(self) -> str:
        """The network TKAN reads, with its checkpoint when the name does not pin the weights."""
        network = self.tkan_network
        if "tkan" not in self.members:
            return f"{self.tkan.spec.network} (not used: the fusion gives TKAN no weight)"
        if network.weights_id is None:
            return network.name
        return f"{network.name} ({network.describe()['checkpoint']}, sha256 {network.weights_id[:12]})"

    def predict_bytes(
        self, data: bytes, *, filename: str | None = None, use_diarization: bool = False,
        limits: DecodeLimits = DecodeLimits(), deadline: Deadline | None = None,
    ) -> Report:
        """Decode an upload and :meth:`predict` it; decoding errors are :class:`InputError`s.

        ``deadline`` bounds the whole of it: decoding checks it between packets, the analysis between
        stages, and :class:`~soundsentry.errors.ProcessingTimeoutError` is raised once it has passed."""
        start = time.perf_counter()
        waveform = decode_audio(data, filename=filename, limits=limits, deadline=deadline)
        decode_ms = (time.perf_counter() - start) * 1000
        report = self.predict(waveform, use_diarization=use_diarization, deadline=deadline)
        report.timings_ms["decode"] = decode_ms
        return report

    def predict(self, waveform: Waveform, *, use_diarization: bool = False, deadline: Deadline | None = None) -> Report:
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
                annotation = (
                    self.diarizer(samples, regions, speech_probabilities=probabilities)
                    if use_diarization
                    else single_speaker_annotation(regions)
                )
                segments = scoring_segments(annotation, self.config.segments)
        if not segments:
            return self._no_speech(waveform, speech, use_diarization, timer.ms)

        member_scores = self._score(samples, segments, timer)
        probabilities = (
            self.fusion.combine(member_scores) if self.fusion is not None else member_scores["tkan"]
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
        speakers = roll_up_speakers(results, thresholds, self.config.min_speaker_speech_s)
        overall, certainty = overall_verdict(speakers)
        scored = sum(s.duration for s in results)
        category = duration_category(scored)
        return Report(
            overall=overall,
            mean_probability=weighted_mean([s.probability for s in results], [s.duration for s in results]),
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
        )

    def _score(self, samples: np.ndarray, segments: list[ScoringSegment], timer: _Timer) -> dict[str, np.ndarray]:
        """(segment,) P(fake) of each member in :attr:`members`."""
        scores = {}
        if "tkan" in self.members:
            with timer.stage("tkan"):
                features = segment_features(self.tkan_network, self.tkan.spec, samples, segments)
                scores["tkan"] = np.asarray(self.tkan.predict_fake(features), dtype=np.float64)
        crops = [crop_samples(samples, s.start, s.end) for s in segments]
        if "cnn" in self.members:
            with timer.stage("cnn"):
                scores["cnn"] = np.asarray(self.cnn.score_many(crops), dtype=np.float64)
        if "flatness" in self.members:
            with timer.stage("flatness"):
                scores["flatness"] = np.asarray(self.flatness.score_many(crops), dtype=np.float64)
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
        """What is loaded: models, backends, thresholds, the feature definition, training metadata (no server paths)."""
        return without_paths({
            "models": self.models,
            "thresholds": self.thresholds,
            "feature_spec": self.tkan.spec.to_dict(),
            "training": self.tkan.metadata,
            "fusion": self.fusion.to_dict() if self.fusion is not None else None,
            "cnn_transformer": self.cnn.info() if self.cnn is not None else None,
            "flatness": self.flatness.info() if self.flatness is not None else None,
            "config": {
                "min_speech_s": self.config.min_speech_s,
                "min_speaker_speech_s": self.config.min_speaker_speech_s,
                "segment_min_s": self.config.segments.min_duration_s,
                "segment_max_s": self.config.segments.max_duration_s,
            },
        })


def _check_fusion_artefacts(fusion: Fusion, data_dir: Path, tkan_dir: Path) -> None:
    """The fusion's member artefacts are the ones it was fitted with: TKAN's in ``tkan_dir``, the others
    in ``data_dir``."""
    artefacts = dict(fusion.metadata.get("artefacts", {}))
    tkan_files = {name: artefacts.pop(name) for name in TKAN_FILES if name in artefacts}
    check_member_artefacts(replace(fusion, metadata={"artefacts": artefacts}), data_dir)
    check_member_artefacts(replace(fusion, metadata={"artefacts": tkan_files}), tkan_dir)


def _load_tkan_network(
    tkan: TkanArtifacts, tkan_dir: Path, xvector_dir: Path | None, resemblyzer: SpeakerNetwork
) -> TkanNetwork:
    """The network the TKAN classifier was trained on; refuse other weights than its training run's."""
    network = load_tkan_network(tkan.spec.network, xvector_dir=xvector_dir, resemblyzer=resemblyzer)
    recorded = tkan.metadata.get("speaker_network", {})
    trained_on = recorded.get("checkpoint_sha256")
    if network.weights_id is not None and trained_on and trained_on != network.weights_id:
        checkpoint = network.describe()["checkpoint"]
        raise ModelLoadError(
            f"{checkpoint} (sha256 {network.weights_id[:12]}…) is not the {network.name} checkpoint the TKAN "
            f"classifier in {tkan_dir} was trained with (sha256 {trained_on[:12]}…, then at "
            f"{recorded.get('checkpoint', '?')}): put that checkpoint at {checkpoint}, or retrain the classifier "
            "on features extracted with this one."
        )
    return network


def _load_cnn(path: Path) -> SpectralScorer:
    try:
        return SpectralScorer.load(path)
    except Exception as error:  # a missing or corrupt artefact is a load error, reported at start-up
        raise ModelLoadError(f"{path}: cannot load the CNN-Transformer the fusion needs ({error}); "
                             "restore it or remove data/fusion.json to score with TKAN alone") from error


def _denoise(samples: np.ndarray) -> np.ndarray:
    import noisereduce

    if samples.size < 2048:  # shorter than its STFT: nothing to estimate the noise from
        return samples
    return noisereduce.reduce_noise(y=samples, sr=16000, stationary=True, n_jobs=1).astype(np.float32)

