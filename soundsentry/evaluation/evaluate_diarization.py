"""Score a diarization backend against reference turns: DER (confusion / missed / false alarm) and speed.

DER is computed by ``pyannote.metrics`` the way pyannote's benchmarks report it: no forgiveness
collar, overlapped speech scored, only inside the UEM (the scored region; the whole file when
there is none). Speed is the real-time factor (processing seconds per second of audio) of the VAD
and of the diarizer, measured per file.

Datasets
--------
``ami``        the AMI excerpts in ``SHARED/diarization/ami_debug`` (RTTM/UEM per split, several URIs each)
``sample``     the two-speaker excerpt in ``SHARED/diarization/sample``
``synthetic``  conversations built here from the LibriSpeech speakers of ``SHARED/corpus``: 2-5
               speakers, known turns, pauses, short turns and some overlap, so the reference is exact;
               seeded, so the same seed gives the same conversations

Usage
-----
    python -m scripts.evaluate_diarization                                # embedded, every dataset
    python -m scripts.evaluate_diarization --backend pyannote --pyannote-dir model/speaker-diarization-community-1
    python -m scripts.evaluate_diarization --dataset synthetic --synthetic-count 40 --output-dir runs/diar

With ``--output-dir`` the hypotheses are written as RTTM next to ``results.json`` (per-file and
per-dataset scores). The functions here are importable (the tests use them); none prints.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyannote.core import Annotation, Segment, Timeline

from soundsentry.audio import SAMPLE_RATE, decode_file
from soundsentry.constants import CHECKOUT
from soundsentry.models.speaker_networks import SPEAKER_NETWORKS
from soundsentry.speech.vad import SileroVad, VadConfig, find_speech

REPO_ROOT = CHECKOUT
DEFAULT_SHARED_DIR = REPO_ROOT.parent / "shared"
DATASETS = ("ami", "sample", "synthetic")


@dataclass(frozen=True, eq=False)
class DiarizationItem:
    """One recording with its reference.

    Attributes
    ----------
    uri : identifier (the RTTM file id)
    samples : (time,) float32 16 kHz mono audio
    reference : reference speaker turns
    uem : the scored region
    """

    uri: str
    samples: np.ndarray
    reference: Annotation
    uem: Timeline

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


# --------------------------------------------------------------------------------------------
# scoring (pure: no I/O)
# --------------------------------------------------------------------------------------------

DER_PARTS = ("confusion", "missed detection", "false alarm")


def der_components(reference: Annotation, hypothesis: Annotation, uem: Timeline | None = None) -> dict[str, float]:
    """Seconds of ``confusion``, ``missed detection``, ``false alarm`` and ``total`` (reference speech,
    overlap counted once per speaker) inside ``uem``; no collar, overlap scored.

    ``diarization error rate`` = (confusion + missed detection + false alarm) / total.
    """
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    detail = metric(reference, hypothesis, uem=uem, detailed=True)
    return {key: float(detail[key]) for key in (*DER_PARTS, "total", "diarization error rate")}


def aggregate(components: Iterable[dict[str, float]]) -> dict[str, float]:
    """Sum per-file components (seconds) and give the rates over the summed reference speech."""
    sums = defaultdict(float)
    for item in components:
        for key in (*DER_PARTS, "total"):
            sums[key] += item[key]
    total = sums["total"]
    out = {key: sums[key] for key in (*DER_PARTS, "total")}
    out["der"] = (sum(sums[k] for k in DER_PARTS) / total) if total > 0 else 0.0
    for key in DER_PARTS:
        out[f"{key} rate"] = sums[key] / total if total > 0 else 0.0
    return out


# --------------------------------------------------------------------------------------------
# references on disk
# --------------------------------------------------------------------------------------------


def load_references(
    rttm_paths: Sequence[Path], uem_paths: Sequence[Path] = ()
) -> tuple[dict[str, Annotation], dict[str, Timeline]]:
    """Merge RTTM (and UEM) files that may each list several URIs."""
    from pyannote.database.util import load_rttm, load_uem

    references: dict[str, Annotation] = {}
    for path in rttm_paths:
        references.update(load_rttm(str(path)))
    uems: dict[str, Timeline] = {}
    for path in uem_paths:
        uems.update(load_uem(str(path)))
    return references, uems


def rttm_items(audio_dir: Path, rttm_paths: Sequence[Path], uem_paths: Sequence[Path] = ()) -> list[DiarizationItem]:
    """Items for every ``{uri}.flac`` / ``.wav`` in ``audio_dir`` that has a reference."""
    references, uems = load_references(rttm_paths, uem_paths)
    items = []
    for uri in sorted(references):
        audio = next(
            (audio_dir / f"{uri}{ext}" for ext in (".flac", ".wav") if (audio_dir / f"{uri}{ext}").is_file()), None
        )
        if audio is None:
            continue
        samples = decode_file(audio).samples
        uem = uems.get(uri) or Timeline([Segment(0.0, samples.size / SAMPLE_RATE)], uri=uri)
        references[uri].uri = uri
        items.append(DiarizationItem(uri, samples, references[uri], uem))
    return items


def ami_items(shared_dir: Path) -> list[DiarizationItem]:
    folder = shared_dir / "diarization" / "ami_debug"
    return rttm_items(folder, sorted(folder.glob("*.rttm")), sorted(folder.glob("*.uem")))


def sample_items(shared_dir: Path) -> list[DiarizationItem]:
    folder = shared_dir / "diarization" / "sample"
    return rttm_items(folder, sorted(folder.glob("*.rttm")), sorted(folder.glob("*.uem")))


# --------------------------------------------------------------------------------------------
# synthetic conversations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationRecipe:
    """How synthetic conversations are drawn. Durations in seconds."""

    min_speakers: int = 2
    max_speakers: int = 5
    seconds_per_speaker: tuple[float, float] = (12.0, 20.0)  # conversation length / speakers
    turn_s: tuple[float, float] = (1.5, 7.0)
    short_turn_s: tuple[float, float] = (0.5, 1.2)
    short_turn_probability: float = 0.2
    pause_s: tuple[float, float] = (0.15, 1.0)
    overlap_probability: float = 0.15
    overlap_s: tuple[float, float] = (0.2, 0.8)
    level_dbfs: tuple[float, float] = (-30.0, -22.0)  # per-speaker speech level
    noise_dbfs: float = -65.0  # white background noise
    min_gap_s: float = 0.5  # shorter silences inside a turn are speech in the reference (as in the AMI RTTMs)
    min_speaker_speech_s: float = 4.0  # speakers with less clean speech are not drawn


def librispeech_speakers(corpus_dir: Path) -> dict[str, list[Path]]:
    """LibriSpeech files of ``manifest.csv`` grouped by speaker (the id before the first ``-``)."""
    speakers: dict[str, list[Path]] = defaultdict(list)
    with open(corpus_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == "librispeech" and row["label"] == "real":
                path = corpus_dir / row["path"]
                speakers[path.name.split("-")[0]].append(path)
    return {speaker: sorted(paths) for speaker, paths in sorted(speakers.items())}


# Speech inside each clean source utterance, for the reference: Silero VAD on the isolated single-speaker
# file (before mixing), tuned for fine boundaries. On clean read speech it marks speech as a careful annotator
# would; the system under test only ever sees the mixture.
REFERENCE_VAD = VadConfig(threshold=0.5, min_speech_duration_ms=100, min_silence_duration_ms=100, speech_pad_ms=30)


def speech_mask(samples: np.ndarray, vad: Callable[[np.ndarray], list], frame_s: float = 0.01) -> np.ndarray:
    """(frame,) bool, True where ``vad`` finds speech in clean single-speaker ``samples``; 10 ms frames."""
    mask = np.zeros(samples.size // round(frame_s * SAMPLE_RATE), dtype=bool)
    for region in vad(samples):
        mask[int(round(region.start / frame_s)) : int(round(region.end / frame_s))] = True
    return mask


def fill_short_gaps(mask: np.ndarray, shorter_than: int) -> np.ndarray:
    """Mark interior runs of False shorter than ``shorter_than`` frames as True."""
    out = mask.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[1], mask.astype(int), [1]])))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if 0 < start and end < mask.size and end - start < shorter_than:
            out[start:end] = True
    return out


def dynamic_range_db(samples: np.ndarray, frame_s: float = 0.01) -> float:
    """Spread between loud (98th percentile) and quiet (5th) 10 ms frames, in dB."""
    hop = round(frame_s * SAMPLE_RATE)
    frames = samples[: samples.size // hop * hop].reshape(-1, hop)
    if frames.size == 0:
        return 0.0
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(np.percentile(level, 98) - np.percentile(level, 5))


class _SpeakerStream:
    """A speaker's speech, consumed turn by turn: files concatenated, leading/trailing silence trimmed.

    Files whose pauses are not clearly quieter than their speech (under ``min_range_db`` between
    loud and quiet frames: noisy recordings) are left out, as their speech could not be marked exactly.
    """

    def __init__(
        self, paths: Sequence[Path], rng: np.random.Generator, vad: Callable, min_range_db: float = 20.0
    ) -> None:
        pieces, masks = [], []
        for index in rng.permutation(len(paths)):
            samples = decode_file(paths[index]).samples
            if dynamic_range_db(samples) < min_range_db:
                continue
            mask = speech_mask(samples, vad)
            speech = np.flatnonzero(mask)
            if speech.size:
                pieces.append(samples[speech[0] * 160 : (speech[-1] + 1) * 160])
                masks.append(mask[speech[0] : speech[-1] + 1])
        self.samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        self.mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
        rms = (
            np.sqrt(np.mean(self.samples[np.repeat(self.mask, 160)].astype(np.float64) ** 2))
            if self.mask.any()
            else 1.0
        )
        self.samples = (self.samples / max(rms, 1e-6)).astype(np.float32)  # speech at 0 dBFS RMS, scaled later
        self.cursor = 0  # in 10 ms frames

    def take(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The next ``duration_s`` of the stream, starting and ending on speech: (samples, mask (frame,))."""
        frames = max(1, round(duration_s * 100))
        if self.cursor + frames > self.mask.size:
            self.cursor = 0
        mask = self.mask[self.cursor : self.cursor + frames]
        speech = np.flatnonzero(mask)
        self.cursor += frames
        if speech.size == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)
        start, end = self.cursor - frames + speech[0], self.cursor - frames + speech[-1] + 1
        return self.samples[start * 160 : end * 160], self.mask[start:end]


def synthetic_conversation(
    speakers: dict[str, list[Path]],
    num_speakers: int,
    rng: np.random.Generator,
    uri: str,
    recipe: ConversationRecipe = ConversationRecipe(),
    vad: Callable[[np.ndarray], list] | None = None,
) -> DiarizationItem:
    """One conversation of ``num_speakers`` LibriSpeech speakers with its exact reference.

    ``vad`` marks speech in the clean source files (default: Silero with :data:`REFERENCE_VAD`).
    """
    vad = vad or SileroVad(REFERENCE_VAD)
    names = list(speakers)
    streams: dict[str, _SpeakerStream] = {}
    for index in rng.permutation(len(names)):  # speakers in random order, until enough usable ones
        stream = _SpeakerStream(speakers[names[index]], rng, vad)
        if stream.mask.sum() >= recipe.min_speaker_speech_s * 100:
            streams[names[index]] = stream
        if len(streams) == num_speakers:
            break
    else:
        raise ValueError(f"fewer than {num_speakers} LibriSpeech speakers with clean speech")
    chosen = list(streams)
    gains = {name: 10 ** (rng.uniform(*recipe.level_dbfs) / 20) for name in chosen}
    target_s = num_speakers * rng.uniform(*recipe.seconds_per_speaker)

    placed: list[tuple[int, np.ndarray, np.ndarray, str]] = []  # (start sample, audio, mask, speaker)
    order = list(rng.permutation(chosen))  # everyone speaks once before anyone speaks twice
    cursor = round(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
    previous_end, previous_speaker, previous_length = cursor, None, 0
    while cursor / SAMPLE_RATE < target_s or order:
        if order:
            speaker = order.pop(0)
        else:
            speaker = str(rng.choice([n for n in chosen if n != previous_speaker]))
        short = rng.random() < recipe.short_turn_probability
        audio, mask = streams[speaker].take(rng.uniform(*(recipe.short_turn_s if short else recipe.turn_s)))
        if audio.size == 0:  # a stretch without speech: this speaker's turn is skipped
            continue
        if previous_speaker is not None and rng.random() < recipe.overlap_probability:
            overlap = min(
                rng.uniform(*recipe.overlap_s), 0.5 * previous_length / SAMPLE_RATE, 0.5 * audio.size / SAMPLE_RATE
            )
            start = previous_end - round(overlap * SAMPLE_RATE)
        else:
            start = previous_end + round(rng.uniform(*recipe.pause_s) * SAMPLE_RATE)
        placed.append((start, audio * gains[speaker], mask, speaker))
        previous_end, previous_speaker, previous_length = start + audio.size, speaker, audio.size
        cursor = previous_end

    total = previous_end + round(rng.uniform(0.3, 1.0) * SAMPLE_RATE)
    mix = (rng.standard_normal(total) * 10 ** (recipe.noise_dbfs / 20)).astype(np.float32)
    reference = Annotation(uri=uri)
    labels = {name: f"spk{index}_{name}" for index, name in enumerate(chosen)}
    for start, audio, mask, speaker in placed:
        mix[start : start + audio.size] += audio
        spans = _mask_spans(fill_short_gaps(mask, round(recipe.min_gap_s * 100)))
        for first, last in spans:
            segment = Segment(start / SAMPLE_RATE + first / 100, start / SAMPLE_RATE + last / 100)
            reference[segment, reference.new_track(segment)] = labels[speaker]
    np.clip(mix, -1.0, 1.0, out=mix)
    uem = Timeline([Segment(0.0, total / SAMPLE_RATE)], uri=uri)
    return DiarizationItem(uri, mix, reference.support(), uem)


def _mask_spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def synthetic_items(
    shared_dir: Path,
    count: int = 24,
    seed: int = 0,
    recipe: ConversationRecipe = ConversationRecipe(),
) -> list[DiarizationItem]:
    """``count`` conversations, the number of speakers cycling min..max; seeded."""
    speakers = librispeech_speakers(shared_dir / "corpus")
    if not speakers:
        raise FileNotFoundError(f"no LibriSpeech rows in {shared_dir / 'corpus' / 'manifest.csv'}")
    rng = np.random.default_rng(seed)
    vad = SileroVad(REFERENCE_VAD)
    span = recipe.max_speakers - recipe.min_speakers + 1
    return [
        synthetic_conversation(
            speakers, recipe.min_speakers + index % span, rng, f"synth{seed}_{index:03d}", recipe, vad
        )
        for index in range(count)
    ]


# --------------------------------------------------------------------------------------------
# running a backend
# --------------------------------------------------------------------------------------------


@dataclass
class ItemResult:
    dataset: str
    uri: str
    duration_s: float
    speech_s: float
    reference_speakers: int
    hypothesis_speakers: int
    vad_s: float
    diarization_s: float
    diarization_cpu_s: float  # CPU time of the process (all threads): less sensitive to other load than wall time
    components: dict[str, float] = field(default_factory=dict)
    hypothesis: Annotation | None = None


def run_backend(
    vad: Callable[[np.ndarray], list],
    diarizer: Callable[..., Annotation],
    items: Sequence[DiarizationItem],
    dataset: str,
) -> list[ItemResult]:
    """VAD then diarizer on each item, timed, scored against its reference."""
    results = []
    for item in items:
        start = time.perf_counter()
        regions, probabilities = find_speech(vad, item.samples)
        vad_s = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        hypothesis = diarizer(item.samples, regions, uri=item.uri, speech_probabilities=probabilities)
        diarization_s, diarization_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        hypothesis.uri = item.uri
        results.append(
            ItemResult(
                dataset=dataset,
                uri=item.uri,
                duration_s=item.duration_s,
                speech_s=float(sum(r.duration for r in regions)),
                reference_speakers=len(item.reference.crop(item.uem).labels()),
                hypothesis_speakers=len(hypothesis.labels()),
                vad_s=vad_s,
                diarization_s=diarization_s,
                diarization_cpu_s=diarization_cpu_s,
                components=der_components(item.reference, hypothesis, item.uem),
                hypothesis=hypothesis,
            )
        )
    return results


def summarise(results: Sequence[ItemResult]) -> dict[str, float]:
    """Dataset-level DER (and its parts), speaker-count accuracy and real-time factors."""
    summary = aggregate(r.components for r in results)
    duration = sum(r.duration_s for r in results)
    speech = sum(r.speech_s for r in results)
    summary.update(
        files=len(results),
        audio_s=duration,
        speaker_count_accuracy=float(np.mean([r.hypothesis_speakers == r.reference_speakers for r in results]))
        if results
        else 0.0,
        rtf_vad=sum(r.vad_s for r in results) / duration if duration else 0.0,
        rtf_diarization=sum(r.diarization_s for r in results) / duration if duration else 0.0,
        diarization_s_per_speech_minute=60 * sum(r.diarization_s for r in results) / speech if speech else 0.0,
        diarization_cpu_s_per_speech_minute=60 * sum(r.diarization_cpu_s for r in results) / speech if speech else 0.0,
    )
    return summary


def format_table(summaries: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per dataset."""
    columns = (
        "dataset",
        "files",
        "audio (min)",
        "DER %",
        "confusion %",
        "missed %",
        "false alarm %",
        "speakers right %",
        "RTF VAD",
        "RTF diarization",
        "diarization s / speech min",
        "CPU s / speech min",
    )
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    for name, s in summaries.items():
        cells = (
            name,
            s["files"],
            f"{s['audio_s'] / 60:.1f}",
            f"{100 * s['der']:.1f}",
            f"{100 * s['confusion rate']:.1f}",
            f"{100 * s['missed detection rate']:.1f}",
            f"{100 * s['false alarm rate']:.1f}",
            f"{100 * s['speaker_count_accuracy']:.0f}",
            f"{s['rtf_vad']:.4f}",
            f"{s['rtf_diarization']:.4f}",
            f"{s['diarization_s_per_speech_minute']:.2f}",
            f"{s['diarization_cpu_s_per_speech_minute']:.2f}",
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_rttm(annotation: Annotation, path: Path) -> None:
    with open(path, "a") as handle:
        annotation.write_rttm(handle)


# --------------------------------------------------------------------------------------------
# long audio: peak memory through the detector
# --------------------------------------------------------------------------------------------


def write_long_recording(corpus_dir: Path, minutes: float, output: Path, seed: int = 0) -> Path:
    """Concatenate the corpus's real speech (all speakers, shuffled, 0.2-1.0 s pauses) to ``minutes``
    and write it as WebM/Opus (32 kb/s: an hour is ~15 MB, under the upload limit) with ffmpeg."""
    import shutil
    import subprocess
    import tempfile

    import soundfile

    with open(corpus_dir / "manifest.csv", newline="") as handle:
        paths = [corpus_dir / row["path"] for row in csv.DictReader(handle) if row["label"] == "real"]
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    audio = np.zeros(total, dtype=np.float32)
    cursor = 0
    while cursor < total:
        for index in rng.permutation(len(paths)):
            piece = decode_file(paths[index]).samples
            piece = piece[: total - cursor]
            audio[cursor : cursor + piece.size] = piece
            cursor += piece.size + int(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
            if cursor >= total:
                break
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("the ffmpeg program is needed to write long recordings (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "long.wav"
        soundfile.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
        del audio
        subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(wav),
                "-c:a",
                "libopus",
                "-b:a",
                "32k",
                "-f",
                "webm",
                str(output),
            ],
            check=True,
        )
    return output


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_check(path: Path, backend: str) -> dict[str, float | str]:
    """Decode, VAD, diarize and score ``path`` through the detector, as a request would; peak RSS after."""
    from soundsentry.audio import DecodeLimits
    from soundsentry.detector import Detector, DetectorConfig

    detector = Detector.load(DetectorConfig(diarization_backend=backend))
    loaded_mb = peak_rss_mb()
    start = time.perf_counter()
    report = detector.predict_bytes(
        path.read_bytes(),
        filename=path.name,
        use_diarization=True,
        limits=DecodeLimits(max_upload_bytes=1 << 30, max_duration_s=4 * 3600.0, decode_timeout_s=1800.0),
    )
    return {
        "file": str(path),
        "duration_s": report.duration,
        "speech_s": report.speech_duration,
        "speakers": len(report.speakers),
        "segments": len(report.segments),
        "seconds": time.perf_counter() - start,
        **{f"{k}_ms": v for k, v in report.timings_ms.items()},
        "peak_rss_after_load_mb": loaded_mb,
        "peak_rss_mb": peak_rss_mb(),
        "backend": detector.models["diarization_backend"],
    }


def load_items(dataset: str, shared_dir: Path, synthetic_count: int, synthetic_seed: int) -> list[DiarizationItem]:
    if dataset == "ami":
        return ami_items(shared_dir)
    if dataset == "sample":
        return sample_items(shared_dir)
    if dataset == "synthetic":
        return synthetic_items(shared_dir, count=synthetic_count, seed=synthetic_seed)
    raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("embedded", "pyannote", "auto"), default="embedded")
    parser.add_argument(
        "--pyannote-dir",
        type=Path,
        default=None,
        help="local pyannote pipeline directory (config.yaml + sub-models); default model/<pipeline>",
    )
    parser.add_argument(
        "--speaker-network",
        choices=SPEAKER_NETWORKS,
        default="resemblyzer",
        help="the embedded diarizer's speaker network, with the clustering settings tuned for it",
    )
    parser.add_argument("--dataset", action="append", choices=DATASETS, help="repeatable; default: all")
    parser.add_argument("--shared-dir", type=Path, default=DEFAULT_SHARED_DIR)
    parser.add_argument("--synthetic-count", type=int, default=24)
    parser.add_argument("--synthetic-seed", type=int, default=0)
    parser.add_argument("--max-files", type=int, default=0, help="only the first N recordings of each dataset (0: all)")
    parser.add_argument("--output-dir", type=Path, default=None, help="write results.json and hypotheses RTTM here")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 is steadier on a busy machine",
    )
    parser.add_argument(
        "--make-long-audio",
        nargs=2,
        metavar=("MINUTES", "FILE"),
        help="write MINUTES of concatenated corpus speech to FILE (WebM/Opus) and exit",
    )
    parser.add_argument(
        "--memory-check",
        type=Path,
        metavar="FILE",
        help="run FILE through the detector with diarization; print timings and peak RSS",
    )
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.make_long_audio:
        minutes, output = args.make_long_audio
        written = write_long_recording(args.shared_dir / "corpus", float(minutes), Path(output))
        sys.stdout.write(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)\n")
        return 0
    if args.memory_check:
        result = memory_check(args.memory_check, args.backend)
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0

    from dataclasses import replace

    from soundsentry.models.speaker_networks import load_speaker_network
    from soundsentry.speech.diarization import DiarizerConfig, load_speech_backends

    kwargs = {"pyannote_dir": args.pyannote_dir} if args.pyannote_dir else {}
    if args.backend != "pyannote":
        network = load_speaker_network(args.speaker_network)
        settings = getattr(network, "diarizer_settings", {})  # its clustering settings (Resemblyzer: the defaults)
        kwargs.update(network=network, diarizer_config=replace(DiarizerConfig(), **settings))
    backends = load_speech_backends(args.backend, **kwargs)
    summaries: dict[str, dict[str, float]] = {}
    all_results: list[ItemResult] = []
    for dataset in args.dataset or DATASETS:
        items = load_items(dataset, args.shared_dir, args.synthetic_count, args.synthetic_seed)
        items = items[: args.max_files] if args.max_files else items
        if not items:
            sys.stderr.write(f"{dataset}: no items found under {args.shared_dir}; skipped\n")
            continue
        results = run_backend(backends.vad, backends.diarizer, items, dataset)
        summaries[dataset] = summarise(results)
        all_results.extend(results)
    if not summaries:
        sys.stderr.write(f"nothing to evaluate: check --shared-dir ({args.shared_dir})\n")
        return 1
    if len(summaries) > 1:
        summaries["all"] = summarise(all_results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    sys.stdout.write(
        f"backend: {backends.describe()}\ntorch threads: {torch.get_num_threads()}; load average at the end: "
        f"{load:.2f} on {os.cpu_count()} CPUs\n\n"
        f"{format_table(summaries)}\n"
    )
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        rttm = args.output_dir / "hypotheses.rttm"
        rttm.unlink(missing_ok=True)
        for result in all_results:
            write_rttm(result.hypothesis, rttm)
        per_file = [{k: v for k, v in vars(r).items() if k != "hypothesis"} for r in all_results]
        (args.output_dir / "results.json").write_text(
            json.dumps(
                {"backend": backends.describe(), "datasets": summaries, "files": per_file},
                indent=2,
                default=_json_default,
            )
        )
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
