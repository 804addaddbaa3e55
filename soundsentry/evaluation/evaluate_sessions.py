"""A tab's stream judged chunk by chunk against the session's rolling verdict, on ``../shared/devset``.

A **stream** is what a tab playing one source's files back to back sends: the devset files of one
(source, label) group in manifest order (so a fake stream holds one generator, or two where one's
files run out), joined and cut into ``--chunks`` consecutive 4 s
pieces, each encoded as WEBM/Opus (32 kb/s) like the extension's chunks. Every chunk goes through the
served path (``Detector.predict_bytes`` with the speakers' d-vectors) and into one
:class:`~soundsentry.sessions.Session` (:func:`~soundsentry.sessions.add_chunk`,
:func:`~soundsentry.sessions.summarise`), exactly as ``POST /sessions/{id}/chunks`` does.

Reported: the EER of single chunks (each chunk's own ``mean_probability``) and of the session after
1, 2, 3, 5 and all chunks (its ``mean_probability``), each with a 95 % bootstrap interval over streams,
the paired difference session − chunk over the same resamples; at the served thresholds, reals called
Fake and fakes called Real for chunks and for sessions; and the spread of a stream's chunk logits
(what :data:`~soundsentry.sessions.PRIOR_SD` stands for). Validation only: nothing here fits anything.

    python -m scripts.evaluate_sessions --devset ../shared/devset --output-dir results/sessions
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsentry.audio import SAMPLE_RATE, decode_audio, encode_audio
from soundsentry.constants import CHECKOUT
from soundsentry.datasets import AudioItem, load_items
from soundsentry.evaluation.metrics import bootstrap_rate, compute_eer
from soundsentry.fusion import logit
from soundsentry.sessions import Session, add_chunk, summarise

log = logging.getLogger(__name__)
CHUNK_S = 4.0
CHECKPOINTS = (1, 2, 3, 5)


@dataclass(frozen=True)
class Stream:
    name: str  # source/label/system#index
    label: int  # 1 = fake
    source: str
    chunks: list[np.ndarray]  # (time,) 16 kHz, CHUNK_S each


def build_streams(items: list[AudioItem], chunks_per_stream: int = 10) -> Iterator[Stream]:
    """Streams of ``chunks_per_stream`` whole chunks from each (source, label) group's files, joined in
    manifest order; a group's remainder shorter than a stream is left out."""
    groups: dict[tuple[str, int], list[AudioItem]] = {}
    for item in items:
        groups.setdefault((item.source, item.label), []).append(item)
    step, span = int(CHUNK_S * SAMPLE_RATE), int(CHUNK_S * SAMPLE_RATE) * chunks_per_stream
    for (source, label), members in sorted(groups.items()):
        audio = np.concatenate([decode_audio(m.path.read_bytes(), filename=m.path.name).samples for m in members])
        for index, start in enumerate(range(0, audio.size - span + 1, span)):
            piece = audio[start : start + span]
            yield Stream(f"{source}/{'fake' if label else 'real'}#{index}", label, source,
                         [piece[i : i + step] for i in range(0, span, step)])


def run_stream(detector, stream: Stream, bitrate: str = "32k") -> list[dict]:
    """One row per chunk: the chunk's own answer and the session's after it."""
    session = Session(stream.name, time.time(), time.time())
    rows = []
    for index, samples in enumerate(stream.chunks):
        chunk = encode_audio(samples, "webm", bitrate=bitrate)
        start = time.perf_counter()  # decode + analysis + the session's update, as the route does them
        report = detector.predict_bytes(chunk, filename="audio-chunk.webm", embed_speakers=True)
        add_chunk(session, report)
        state = summarise(session, detector, ttl_s=0)
        alone = summarise(session, detector, ttl_s=0, contrast=False)
        rows.append({
            "stream": stream.name, "label": stream.label, "source": stream.source, "chunk": index,
            "chunk_overall": report.overall, "chunk_probability": round(report.mean_probability, 5),
            "session_overall": state["overall"], "session_probability": state["mean_probability"],
            "session_overall_alone": alone["overall"],
            "session_speakers": len(state["speakers"]), "session_confidence": state["confidence"],
            "ms": round((time.perf_counter() - start) * 1000, 1),
        })
    return rows


def _eer(labels: np.ndarray, scores: np.ndarray) -> float:
    return compute_eer(scores[labels == 1], scores[labels == 0])[0]


def summarise_rows(rows: list[dict], *, resamples: int = 1000, seed: int = 0) -> dict:
    """EERs of chunks and of sessions after each checkpoint, with stream-bootstrap intervals and paired
    differences; verdict rates at the served thresholds."""
    streams = sorted({r["stream"] for r in rows})
    n = max(r["chunk"] for r in rows) + 1
    by_stream = {s: sorted((r for r in rows if r["stream"] == s), key=lambda r: r["chunk"]) for s in streams}
    labels = np.array([by_stream[s][0]["label"] for s in streams])
    chunk_scores = np.array([[r["chunk_probability"] for r in by_stream[s]] for s in streams])  # (stream, chunk)
    session_scores = np.array([[r["session_probability"] for r in by_stream[s]] for s in streams])
    checkpoints = [k for k in CHECKPOINTS if k < n] + [n]

    def eers(index: np.ndarray) -> dict[str, float]:
        chunk_labels = np.repeat(labels[index], n)
        values = {"chunk": _eer(chunk_labels, chunk_scores[index].ravel())}
        for k in checkpoints:
            values[f"session_{k}"] = _eer(labels[index], session_scores[index, k - 1])
        return values

    point = eers(np.arange(len(streams)))
    rng = np.random.default_rng(seed)
    fakes, reals = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    drawn: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(resamples):
        index = np.concatenate([rng.choice(fakes, fakes.size), rng.choice(reals, reals.size)])
        for name, value in eers(index).items():
            drawn[name].append(value)

    def interval(values) -> list[float]:
        return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]

    eer_table = {name: {"eer": round(point[name], 4), "interval": interval(drawn[name])} for name in point}
    for k in checkpoints:
        difference = np.array(drawn[f"session_{k}"]) - np.array(drawn["chunk"])
        eer_table[f"session_{k}"]["minus_chunk"] = {"difference": round(point[f"session_{k}"] - point["chunk"], 4),
                                                    "interval": interval(difference)}
    final_rows = [by_stream[s][-1] for s in streams]

    def rates(selected: list[dict], key: str) -> dict:
        out = {}
        for label, wrong, name in ((0, "Fake", "reals_called_fake"), (1, "Real", "fakes_called_real")):
            kept = [r for r in selected if r["label"] == label]
            out[name] = bootstrap_rate(np.array([r[key] == wrong for r in kept]), np.array([r["stream"] for r in kept]),
                                       resamples=resamples, seed=seed)
        return out

    logits = logit(np.clip(chunk_scores, 1e-4, 1 - 1e-4))
    return {
        "streams": {"real": int((labels == 0).sum()), "fake": int((labels == 1).sum()), "chunks_per_stream": n},
        "eer": eer_table,
        "at_served_thresholds": {"chunks": rates(rows, "chunk_overall"),
                                 "sessions": rates(final_rows, "session_overall"),
                                 "sessions_speakers_alone": rates(final_rows, "session_overall_alone")},
        "chunk_logit_sd_within_stream": {"median": round(float(np.median(logits.std(axis=1, ddof=1))), 3),
                                         "mean": round(float(np.mean(logits.std(axis=1, ddof=1))), 3)},
        "chunk_ms": {"p50": float(np.percentile([r["ms"] for r in rows], 50)),
                     "p90": float(np.percentile([r["ms"] for r in rows], 90))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devset", type=Path, default=CHECKOUT.parent / "shared" / "devset")
    parser.add_argument("--chunks", type=int, default=10, help="chunks per stream")
    parser.add_argument("--output-dir", type=Path, default=Path("results/sessions"))
    parser.add_argument("--limit", type=int, default=0, help="at most this many streams (0 = all; a quick look)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from soundsentry.detector import Detector

    torch.set_num_threads(1)
    detector = Detector.load()
    streams = list(build_streams(load_items(args.devset), args.chunks))
    if args.limit:
        streams = streams[: args.limit]
    log.info("%d streams of %d chunks", len(streams), args.chunks)
    rows = []
    for number, stream in enumerate(streams, 1):
        rows.extend(run_stream(detector, stream))
        if number % 10 == 0:
            log.info("%d / %d streams", number, len(streams))
    summary = summarise_rows(rows)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
