"""Batch evaluation through the served path: every file goes through ``Detector.predict_bytes``.

Scores are the reports' ``mean_probability`` (P(fake)); decisions are their ``overall`` verdicts,
so the confusion matrix is what a user of the API would have seen. Files answered "No Speech" or
rejected are counted apart and left out of the metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from soundsentry.audio import SAMPLE_RATE, decode_audio, encode_audio
from soundsentry.datasets import AudioItem
from soundsentry.detector import Detector
from soundsentry.errors import SoundSentryError
from soundsentry.metrics import binary_report, eer_from_labels

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    item: AudioItem
    status: str  # "ok" | "no_speech" | "error"
    probability: float = float("nan")
    overall: str = ""
    category: str = ""
    speakers: int = 0
    error: str = ""
    processing_ms: float = 0.0
    chunk: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "path": str(self.item.path), "chunk": self.chunk, "label": self.item.label_name, "source": self.item.source,
            "system": self.item.system, "status": self.status, "overall": self.overall,
            "probability": f"{self.probability:.6f}", "category": self.category,
            "speakers": self.speakers, "processing_ms": f"{self.processing_ms:.1f}", "error": self.error,
        }


@dataclass(frozen=True)
class BrowserChunks:
    """The browser extension's condition: each file cut into ``chunk_s`` pieces, each encoded as
    WEBM/Opus at ``bitrate`` and scored on its own (a trailing piece under half a chunk is dropped)."""

    chunk_s: float = 4.0
    bitrate: str = "32k"

    def split(self, data: bytes, filename: str) -> list[tuple[str, bytes]]:
        samples = decode_audio(data, filename=filename).samples
        step = int(self.chunk_s * SAMPLE_RATE)
        pieces = [samples[i : i + step] for i in range(0, samples.size, step)]
        return [
            (f"{filename}#{index}", encode_audio(piece, "webm", bitrate=self.bitrate))
            for index, piece in enumerate(pieces)
            if piece.size >= step // 2
        ]


def predict_items(
    detector: Detector, items: Iterable[AudioItem], *, use_diarization: bool = False,
    chunks: BrowserChunks | None = None,
    progress: Callable[[Iterable[AudioItem]], Iterable[AudioItem]] = lambda x: x,
) -> list[Prediction]:
    """One prediction per file, or per chunk of each file with ``chunks``."""
    predictions = []
    for item in progress(items):
        try:
            data = item.path.read_bytes()
            uploads = chunks.split(data, item.path.name) if chunks else [(item.path.name, data)]
        except (SoundSentryError, OSError) as error:
            predictions.append(_failed(item, error))
            continue
        for name, upload in uploads:
            try:
                report = detector.predict_bytes(upload, filename=name, use_diarization=use_diarization)
            except SoundSentryError as error:
                predictions.append(_failed(item, error))
                continue
            status = "no_speech" if report.overall == "No Speech" else "ok"
            predictions.append(Prediction(
                item, status, probability=report.mean_probability, overall=report.overall,
                category=report.category, speakers=len(report.speakers), chunk=name,
                processing_ms=sum(report.timings_ms.values()),
            ))
    return predictions


def _failed(item: AudioItem, error: Exception) -> Prediction:
    message = getattr(error, "message", str(error))
    log.warning("%s: %s", item.path, message)
    return Prediction(item, "error", error=message)


def _group_eer(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """EER of each group's fakes against all reals (the devset README's pooling)."""
    real = labels == 0
    result = {}
    for group in sorted(set(groups[labels == 1])):
        fake = (groups == group) & (labels == 1)
        if real.any() and fake.any():
            result[group] = eer_from_labels(
                np.concatenate([np.zeros(real.sum()), np.ones(fake.sum())]),
                np.concatenate([scores[real], scores[fake]]),
            )[0]
    return result


def summarise(predictions: list[Prediction], thresholds: dict[str, float]) -> dict[str, Any]:
    """metrics.json content: EER/AUC from probabilities, confusion etc. from the verdicts."""
    scored = [p for p in predictions if p.status == "ok"]
    summary: dict[str, Any] = {
        "files": len(predictions),
        "scored": len(scored),
        "no_speech": sum(p.status == "no_speech" for p in predictions),
        "errors": sum(p.status == "error" for p in predictions),
        "model_thresholds": thresholds,
    }
    if not scored:
        return summary
    labels = np.array([p.item.label for p in scored])
    scores = np.array([p.probability for p in scored])
    verdicts = np.array([1.0 if p.overall == "Fake" else 0.0 for p in scored])
    report = binary_report(labels, verdicts, 0.5)  # accuracy/precision/recall/f1/confusion of the verdicts
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix"):
        summary[key] = report[key]
    summary["threshold"] = thresholds.get("normal")
    if 0 < labels.sum() < labels.size:
        by_score = binary_report(labels, scores, thresholds.get("normal", 0.5))
        for key in ("eer", "eer_threshold", "roc_auc", "min_dcf", "ece"):
            summary[key] = by_score[key]
        summary["per_source_eer"] = _group_eer(labels, scores, np.array([p.item.source for p in scored]))
        summary["per_system_eer"] = _group_eer(labels, scores, np.array([p.item.system for p in scored]))
    summary["mean_processing_ms"] = float(np.mean([p.processing_ms for p in scored]))
    return summary
