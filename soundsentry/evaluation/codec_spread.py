"""Codec invariance: the same speech through the codecs it meets, scored by the served detector.

    python -m scripts.codec_spread --test-dir ../shared/devset [--files 80] [--output results/codec_spread.json]

Each file (a seeded sample, reals and fakes alike) is sent as every :data:`CONDITIONS` entry: 16 kHz PCM
WAV, 8 kHz PCM / µ-law / A-law WAV, GSM 06.10 (a phone path: coded at 8 kHz, delivered as PCM WAV, since
the service does not take GSM files), MP3 at 32 / 64 / 128 kb/s and WEBM/Opus at 16 / 32 / 64 kb/s. Each
is decoded and scored by :meth:`Detector.predict_bytes`, as an upload would be. Reported: per file the
spread (largest minus smallest P(fake) over the conditions), its median with a bootstrap interval, and
per condition the mean P(fake) of reals and of fakes and the EER. A detector that reads the codec, not
the voice, has a wide spread and condition means that move together for both classes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from soundsentry.audio import decode_file, encode_audio
from soundsentry.datasets import load_items
from soundsentry.detector import Detector, DetectorConfig
from soundsentry.evaluation.metrics import eer

#: name -> (ffmpeg output arguments, container, suffix the upload is named with, round trip to PCM WAV)
CONDITIONS: dict[str, tuple[tuple[str, ...], str, str, bool]] = {
    "pcm_16k": ((), "wav", "wav", False),
    "pcm_8k": (("-ar", "8000", "-c:a", "pcm_s16le"), "wav", "wav", False),
    "mulaw_8k": (("-ar", "8000", "-c:a", "pcm_mulaw"), "wav", "wav", False),
    "alaw_8k": (("-ar", "8000", "-c:a", "pcm_alaw"), "wav", "wav", False),
    "gsm_8k": (("-ar", "8000", "-c:a", "libgsm"), "gsm", "wav", True),
    "mp3_32k": (("-c:a", "libmp3lame", "-b:a", "32k"), "mp3", "mp3", False),
    "mp3_64k": (("-c:a", "libmp3lame", "-b:a", "64k"), "mp3", "mp3", False),
    "mp3_128k": (("-c:a", "libmp3lame", "-b:a", "128k"), "mp3", "mp3", False),
    "opus_16k": (("-c:a", "libopus", "-b:a", "16k"), "webm", "webm", False),
    "opus_32k": (("-c:a", "libopus", "-b:a", "32k"), "webm", "webm", False),
    "opus_64k": (("-c:a", "libopus", "-b:a", "64k"), "webm", "webm", False),
}


def _ffmpeg(arguments: list[str], data: bytes) -> bytes:
    done = subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                           *arguments], input=data, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-300:]}")
    return done.stdout


def encode(samples: np.ndarray, condition: str) -> tuple[bytes, str]:
    """16 kHz mono ``samples`` as the bytes of ``condition`` and the file name to upload them under."""
    arguments, container, suffix, round_trip = CONDITIONS[condition]
    wav = encode_audio(samples, "wav")
    if not arguments:
        return wav, f"clip.{suffix}"
    data = _ffmpeg(["-i", "pipe:0", *arguments, "-f", container, "pipe:1"], wav)
    if round_trip:  # the service does not take this codec's files: deliver its sound as PCM
        data = _ffmpeg(["-f", container, "-ar", "8000", "-i", "pipe:0", "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"],
                       data)
    return data, f"clip.{suffix}"


def _bootstrap_median(values: np.ndarray, seed: int = 0, resamples: int = 1000) -> list[float]:
    rng = np.random.default_rng(seed)
    medians = [np.median(rng.choice(values, size=len(values))) for _ in range(resamples)]
    return [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))]


def measure(detector: Detector, items, conditions=tuple(CONDITIONS)) -> dict:
    """The spread report (module docstring) of ``items``."""
    scores = np.full((len(items), len(conditions)), np.nan)
    for i, item in enumerate(items):
        samples = decode_file(item.path).samples
        for j, condition in enumerate(conditions):
            data, name = encode(samples, condition)
            report = detector.predict_bytes(data, filename=name)
            if report.overall != "No Speech":
                scores[i, j] = report.mean_probability
    labels = np.array([item.label for item in items])
    scored = ~np.isnan(scores).any(axis=1)
    spread = scores[scored].max(axis=1) - scores[scored].min(axis=1)
    result = {"files": len(items), "scored_in_every_condition": int(scored.sum()), "conditions": list(conditions),
              "median_spread": float(np.median(spread)) if spread.size else float("nan"),
              "median_spread_interval": _bootstrap_median(spread) if spread.size else None,
              "median_spread_real": float(np.median(spread[labels[scored] == 0])) if (labels[scored] == 0).any()
              else None,
              "median_spread_fake": float(np.median(spread[labels[scored] == 1])) if (labels[scored] == 1).any()
              else None,
              "per_condition": {}}
    for j, condition in enumerate(conditions):
        column, keep = scores[:, j], ~np.isnan(scores[:, j])
        entry = {"mean_p_fake_real": float(np.mean(column[keep & (labels == 0)])) if (keep & (labels == 0)).any()
                 else None,
                 "mean_p_fake_fake": float(np.mean(column[keep & (labels == 1)])) if (keep & (labels == 1)).any()
                 else None}
        if len(set(labels[keep])) == 2:
            entry["eer"] = eer(labels[keep], column[keep])
        result["per_condition"][condition] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-dir", type=Path, required=True, help="a dataset folder or manifest")
    parser.add_argument("--files", type=int, default=80, help="files sampled, half real and half fake (default 80)")
    parser.add_argument("--data-dir", type=Path, default=None, help="model directory (default: the shipped models)")
    parser.add_argument("--output", type=Path, default=Path("results/codec_spread.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    items = load_items(args.test_dir)
    rng = np.random.default_rng(args.seed)
    chosen = []
    for label in (0, 1):
        pool = [item for item in items if item.label == label]
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), size=min(len(pool), args.files // 2), replace=False))]
    config = DetectorConfig(data_dir=args.data_dir) if args.data_dir else DetectorConfig()
    result = measure(Detector.load(config), chosen)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    low, high = result["median_spread_interval"] or (float("nan"), float("nan"))
    sys.stdout.write(f"{result['scored_in_every_condition']} of {result['files']} files scored in all "
                     f"{len(CONDITIONS)} conditions; median P(fake) spread {result['median_spread']:.3f} "
                     f"(95 % {low:.3f}-{high:.3f}; reals {result['median_spread_real']:.3f}, "
                     f"fakes {result['median_spread_fake']:.3f})\n")
    for condition, entry in result["per_condition"].items():
        sys.stdout.write(f"  {condition:9s} mean P(fake) reals {entry['mean_p_fake_real']:.3f} "
                         f"fakes {entry['mean_p_fake_fake']:.3f}  EER {100 * entry.get('eer', float('nan')):.1f} %\n")
    return 0
