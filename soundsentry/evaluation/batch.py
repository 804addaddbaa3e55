"""Batch evaluation through the served path: every file goes through ``Detector.predict_bytes``.

Scores are the reports' ``mean_probability`` (P(fake)); decisions are their ``overall`` verdicts,
so the confusion matrix is what a user of the API would have seen. Files answered "No Speech" or
rejected are counted apart and left out of the metrics. The pooled EER comes with a 95 % interval
from a bootstrap over files, and each scorer alone with the paired difference to the served score
(:func:`soundsentry.evaluation.metrics.bootstrap_eer`), so that two designs can be told apart from noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soundsentry.audio import SAMPLE_RATE, decode_audio, encode_audio
from soundsentry.datasets import AudioItem
from soundsentry.detector import Detector
from soundsentry.errors import SoundSentryError
from soundsentry.evaluation.metrics import binary_report, bootstrap_eer, bootstrap_rate, min_dcf, per_group
from soundsentry.fusion import MEMBERS

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    item: AudioItem
    status: str  # "ok" | "no_speech" | "error"
    probability: float = float("nan")
    overall: str = ""
    zone: str = ""  # real | uncertain | fake (soundsentry.rollup.zone)
    category: str = ""
    speakers: int = 0
    error: str = ""
    processing_ms: float = 0.0
    chunk: str = ""
    member_scores: dict[str, float] = field(default_factory=dict)  # each scorer's P(fake), speech-weighted

    def row(self) -> dict[str, Any]:
        return {
            "path": str(self.item.path), "chunk": self.chunk, "label": self.item.label_name, "source": self.item.source,
            "system": self.item.system, "status": self.status, "overall": self.overall, "zone": self.zone,
            "probability": f"{self.probability:.6f}", "category": self.category,
            "speakers": self.speakers, "processing_ms": f"{self.processing_ms:.1f}", "error": self.error,
            **{f"score_{m}": f"{self.member_scores[m]:.6f}" if m in self.member_scores else "" for m in MEMBERS},
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
    """One prediction per file, or per chunk of each file with ``chunks`` (:func:`predict_item` on each)."""
    predictions = []
    for item in progress(items):
        predictions += predict_item(detector, item, use_diarization=use_diarization, chunks=chunks)
    return predictions


def predict_item(
    detector: Detector, item: AudioItem, *, use_diarization: bool = False, chunks: BrowserChunks | None = None,
) -> list[Prediction]:
    """The predictions of one file: one, or one per chunk with ``chunks``; an ``error`` one when it cannot
    be read or decoded. The one unit of work of every engine (:mod:`soundsentry.evaluation.engines`)."""
    try:
        data = item.path.read_bytes()
        uploads = chunks.split(data, item.path.name) if chunks else [(item.path.name, data)]
    except (SoundSentryError, OSError) as error:
        return [_failed(item, error)]
    predictions = []
    for name, upload in uploads:
        try:
            report = detector.predict_bytes(upload, filename=name, use_diarization=use_diarization)
        except SoundSentryError as error:
            predictions.append(_failed(item, error))
            continue
        status = "no_speech" if report.overall == "No Speech" else "ok"
        predictions.append(Prediction(
            item, status, probability=report.mean_probability, overall=report.overall, zone=report.zone or "",
            category=report.category, speakers=len(report.speakers), chunk=name,
            processing_ms=sum(report.timings_ms.values()), member_scores=_member_means(report),
        ))
    return predictions


def _member_means(report) -> dict[str, float]:
    """Each scorer's P(fake) over the report's segments, weighted by their durations."""
    weights = np.array([s.end - s.start for s in report.segments])
    names = set().union(*(s.scores for s in report.segments)) if report.segments else set()
    return {
        name: float(np.average([s.scores[name] for s in report.segments], weights=weights)) for name in sorted(names)
    }


def _failed(item: AudioItem, error: Exception) -> Prediction:
    message = getattr(error, "message", str(error))
    log.warning("%s: %s", item.path, message)
    return Prediction(item, "error", error=message)


def _fakes_and_all_reals(labels: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """For each named group that has fakes, the mask of its fakes and every real (the devset README's pooling)."""
    return {str(group): (labels == 0) | (groups == group) for group in sorted(set(groups[labels == 1]) - {""})}


def _source_intervals(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, files: np.ndarray) -> dict:
    """The 95 % bootstrap interval of each named source's EER (its fakes against all reals)."""
    return {source: bootstrap_eer(labels[keep], scores[keep], files[keep])["interval"]
            for source, keep in _fakes_and_all_reals(labels, sources).items()}


def scored_arrays(predictions: list[Prediction]) -> dict[str, np.ndarray]:
    """Labels, scores (P(fake)), verdicts (1 = Fake), sources and systems of the scored predictions."""
    scored = [p for p in predictions if p.status == "ok"]
    return {
        "labels": np.array([p.item.label for p in scored], dtype=int),
        "scores": np.array([p.probability for p in scored], dtype=np.float64),
        "verdicts": np.array([1 if p.overall == "Fake" else 0 for p in scored], dtype=int),
        "sources": np.array([p.item.source for p in scored], dtype=str),
        "systems": np.array([p.item.system for p in scored], dtype=str),
    }


def _member_scores(scored: list[Prediction]) -> dict[str, np.ndarray]:
    """Each scorer's speech-weighted P(fake) per scored prediction, for the scorers every one of them ran."""
    result = {}
    for name in MEMBERS:
        values = np.array([p.member_scores.get(name, np.nan) for p in scored])
        if np.isfinite(values).all():
            result[name] = values
    return result


def _member_summary(members: dict[str, np.ndarray], labels: np.ndarray, bootstrap: dict) -> dict[str, dict]:
    """EER and ROC-AUC of each scorer alone, and how much the served score beats it (paired bootstrap)."""
    result = {}
    for name, values in members.items():
        report = binary_report(labels, values, 0.5)
        paired = bootstrap["paired"][name]
        result[name] = {"eer": report["eer"], "roc_auc": report["roc_auc"],
                        "served_minus_member_eer": {"difference": paired["difference"], "interval": paired["interval"]}}
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
    arrays = scored_arrays(predictions)
    labels, scores = arrays["labels"], arrays["scores"]
    report = binary_report(labels, arrays["verdicts"], 0.5)  # accuracy/precision/recall/f1/confusion of the verdicts
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix"):
        summary[key] = report[key]
    files = np.array([str(p.item.path) for p in scored])
    verdicts = arrays["verdicts"].astype(bool)
    # the operating point as a user meets it: how often each class gets the other's verdict (files resampled)
    summary["reals_called_fake"] = bootstrap_rate(verdicts[labels == 0], files[labels == 0])
    summary["fakes_called_real"] = bootstrap_rate(~verdicts[labels == 1], files[labels == 1])
    summary["zones"] = {name: {zone: sum(p.zone == zone for p, lab in zip(scored, labels, strict=True) if lab == label)
                               for zone in ("real", "uncertain", "fake")} for name, label in (("real", 0), ("fake", 1))}
    summary["threshold"] = thresholds.get("normal")
    if 0 < labels.sum() < labels.size:
        by_score = binary_report(labels, scores, thresholds.get("normal", 0.5))
        # files are the resampled unit of the bootstrap intervals: the chunks of one file stand or fall together
        for key in ("eer", "eer_threshold", "roc_auc", "min_dcf", "ece"):
            summary[key] = by_score[key]
        for name, groups in (("source", arrays["sources"]), ("system", arrays["systems"])):
            summary[f"per_{name}_eer"] = per_group(labels, scores, groups)
            summary[f"per_{name}_min_dcf"] = per_group(labels, scores, groups, min_dcf)
            # the trials behind each EER: its fakes, against all reals (an EER of 3 fakes moves in 33-point steps)
            summary[f"per_{name}_trials"] = {group: {"fake": int(((groups == group) & (labels == 1)).sum()),
                                                     "real": int((labels == 0).sum())}
                                              for group in summary[f"per_{name}_eer"]}
        summary["per_source_eer_interval"] = _source_intervals(labels, scores, arrays["sources"], files)
        summary["per_source_eer_within_source"] = per_group(labels, scores, arrays["sources"], within=True)
        members = _member_scores(scored)
        bootstrap = bootstrap_eer(labels, scores, files, paired=members)
        summary["eer_interval"] = bootstrap["interval"]
        summary["bootstrap"] = {key: bootstrap[key] for key in ("level", "resamples", "clusters")} | {"unit": "file"}
        summary["members"] = _member_summary(members, labels, bootstrap)
    summary["mean_processing_ms"] = float(np.mean([p.processing_ms for p in scored]))
    return summary


def compare_runs(baseline: list[dict[str, str]], candidate: list[dict[str, str]], *, resamples: int = 1000) -> dict:
    """Paired comparison of two evaluations of one test set: rows of their ``predictions.csv``.

    Only the trials (file, or chunk of a file) that both runs scored take part. Returns each run's EER
    on them and the candidate's minus the baseline's, pooled and per source (its fakes against all
    reals), with 95 % intervals from one bootstrap over files: the way to tell whether a new design
    beats the shipped one or only drew luckier files.
    """
    def scored(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        return {(row["path"], row["chunk"]): row for row in rows if row["status"] == "ok"}

    before, after = scored(baseline), scored(candidate)
    keys = sorted(before.keys() & after.keys())
    if any(before[key]["label"] != after[key]["label"] for key in keys):
        raise ValueError("the two runs label some trials differently: they are not runs of one test set")
    labels = np.array([before[key]["label"] == "fake" for key in keys], dtype=int)
    if not 0 < labels.sum() < labels.size:
        raise ValueError(f"the runs share {len(keys)} scored trials, without both fakes and reals among them")
    files = np.array([key[0] for key in keys])
    sources = np.array([before[key]["source"] for key in keys])
    runs = {name: np.array([float(rows[key]["probability"]) for key in keys]) for name, rows in
            (("baseline", before), ("candidate", after))}

    def paired(keep: np.ndarray) -> dict[str, Any]:
        result = bootstrap_eer(labels[keep], runs["candidate"][keep], files[keep], resamples=resamples,
                               paired={"baseline": runs["baseline"][keep]})
        versus = result["paired"]["baseline"]
        return {"baseline_eer": versus["eer"], "candidate_eer": result["eer"],
                "difference": versus["difference"], "interval": versus["interval"]}

    per_source = {source: paired(keep) for source, keep in _fakes_and_all_reals(labels, sources).items()}
    return {"trials": len(keys), "files": len(set(files)), "resamples": resamples,
            "pooled": paired(np.ones(labels.size, dtype=bool)), "per_source": per_source if len(per_source) > 1 else {}}
