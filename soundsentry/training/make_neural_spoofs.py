"""Make neural-vocoder copy-synthesis fakes from the corpus's real utterances (LibriSpeech by default).

    python -m scripts.make_neural_spoofs --vocoder cache/vocoders/hifigan.pt [cache/vocoders/melgan.pt ...]
        [--corpus ../shared/corpus] [--output-dir cache/spoofs] [--limit N] [--max-minutes M]
        [--sources librispeech] [--overwrite] [--report-lsd N]

The neural counterpart of ``scripts/make_spoofs.py`` (Wang & Yamagishi, ICASSP 2023): every real file
of ``CORPUS/manifest.csv`` whose source is one of ``--sources`` (default ``librispeech``) goes through
each vocoder trained by ``scripts/train_vocoder.py`` (waveform → mel → waveform) and is written as
16 kHz 16-bit FLAC to ``OUTPUT_DIR/<family>/<file name>`` (``scripts.make_spoofs.relative_name``), the
original's length and RMS. ``<family>`` (``hifigan``, ``melgan``) comes from the checkpoint.

The list goes to ``OUTPUT_DIR/manifest_neural.csv``, not ``manifest.csv``: ``make_spoofs`` rewrites
``manifest.csv`` from its own DSP methods on every run and would drop rows added here. The columns are
the corpus manifest's (label ``fake``, source ``resynth_<family>``, system ``<family>``, the original's
speaker and licence, origin = the original's path in the corpus); pass both manifests to the trainers
(``--data cache/spoofs/manifest.csv --data cache/spoofs/manifest_neural.csv``). The manifest is
rewritten from the files present, so it never lists a file twice. ``OUTPUT_DIR/<family>/vocoder.json``
records which checkpoint (step, SHA-256, config) made the files.

Deterministic (the generators have no randomness). Resumable: files already present are skipped;
each is written under a temporary name and renamed. ``--max-minutes`` stops cleanly between files
(the manifest still lists everything made). Single-threaded by design (shared machines).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from soundsentry.constants import CHECKOUT
from soundsentry.hashing import file_sha256
from soundsentry.training.make_spoofs import (
    add_sources_argument,
    load,
    read_sources,
    relative_name,
    write_flac,
    write_manifest,
)
from soundsentry.training.spoofs import SAMPLE_RATE, log_spectral_distance
from soundsentry.training.train_vocoder import load_checkpoint
from soundsentry.training.vocoders import VOCODER_FAMILIES, Vocoder, remove_weight_norm, vocoder_from_payload

ROOT = CHECKOUT
MANIFEST_NAME = "manifest_neural.csv"
log = logging.getLogger("make_neural_spoofs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocoder", type=Path, nargs="+", required=True,
                        help="checkpoints made by scripts/train_vocoder.py (one per family)")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="corpus folder holding manifest.csv (default ../shared/corpus)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "cache" / "spoofs",
                        help=f"where <family>/ folders and {MANIFEST_NAME} go (default cache/spoofs)")
    add_sources_argument(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N source files")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop starting new files after this many minutes (all vocoders together)")
    parser.add_argument("--overwrite", action="store_true", help="redo files already present")
    parser.add_argument("--report-lsd", type=int, default=3, metavar="N",
                        help="log the log-spectral distance to the original for the first N files made per "
                             "vocoder (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser.parse_args(argv)


def load_vocoder(path: Path) -> tuple[Vocoder, dict[str, Any]]:
    """The vocoder of a checkpoint, ready for inference (eval, weight norm folded), and its provenance."""
    if not path.is_file():
        raise SystemExit(f"no vocoder checkpoint at {path}; train one with scripts/train_vocoder.py")
    payload = load_checkpoint(path)
    try:
        vocoder = vocoder_from_payload(payload)
    except ValueError as error:
        raise SystemExit(f"{path}: {error}") from None
    remove_weight_norm(vocoder.generator)
    provenance = {
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "step": payload.get("step"),
        "config": vocoder.config,
        "validation": (payload.get("history") or [{}])[-1],
    }
    return vocoder, provenance


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(partial, path)


def run_vocoder(
    vocoder: Vocoder, rows: list[dict[str, str]], args: argparse.Namespace, deadline: float | None
) -> dict[str, Any]:
    family = vocoder.family
    stats: dict[str, Any] = {"made": 0, "skipped": 0, "failed": 0, "audio_s": 0.0, "compute_s": 0.0,
                             "lsd_db": [], "stopped_early": False}
    for row in tqdm(rows, desc=family, unit="file", mininterval=10.0, file=sys.stderr):
        out = args.output_dir / family / relative_name(row["path"])
        if out.exists() and not args.overwrite:
            stats["skipped"] += 1
            continue
        if deadline is not None and time.perf_counter() > deadline:
            stats["stopped_early"] = True
            break
        try:
            samples = load(args.corpus / row["path"])
            tick = time.perf_counter()
            with torch.inference_mode():
                fake = vocoder.resynthesize(samples, sample_rate=SAMPLE_RATE)
            stats["compute_s"] += time.perf_counter() - tick
            write_flac(out, fake)
        except (OSError, RuntimeError, ValueError) as error:  # one bad file must not stop a long run
            stats["failed"] += 1
            tqdm.write(f"[{family}] FAILED {row['path']}: {type(error).__name__}: {error}")
            continue
        stats["made"] += 1
        stats["audio_s"] += len(samples) / SAMPLE_RATE
        if len(stats["lsd_db"]) < args.report_lsd:
            lsd = log_spectral_distance(samples, fake)
            stats["lsd_db"].append(lsd)
            tqdm.write(f"[{family}] {row['path']}: log-spectral distance to the original {lsd:.2f} dB")
    return stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    deadline = started + 60.0 * args.max_minutes if args.max_minutes else None
    vocoders = [load_vocoder(path) for path in args.vocoder]
    families = [vocoder.family for vocoder, _ in vocoders]
    if len(set(families)) != len(families):
        raise SystemExit(f"one checkpoint per family, got {families}: their outputs would share a folder")
    all_rows = read_sources(args.corpus, args.sources)
    rows = all_rows[: max(0, args.limit)] if args.limit is not None else all_rows
    log.info("%d files, %.1f min of audio; vocoders: %s; output: %s", len(rows),
             sum(float(r["duration_s"]) for r in rows) / 60,
             ", ".join(f"{v.family} (step {p['step']})" for v, p in vocoders), args.output_dir)
    failed = 0
    for vocoder, provenance in vocoders:
        write_json(args.output_dir / vocoder.family / "vocoder.json", provenance)
        stats = run_vocoder(vocoder, rows, args, deadline)
        failed += stats["failed"]
        minutes = stats["audio_s"] / 60
        lsd = stats["lsd_db"]
        log.info("[%s] made %d, skipped %d, failed %d%s; %.1f min of audio in %.0f s (%.1f s per audio minute); "
                 "LSD of the first %d: %s dB", vocoder.family, stats["made"], stats["skipped"], stats["failed"],
                 " (stopped at --max-minutes)" if stats["stopped_early"] else "", minutes, stats["compute_s"],
                 stats["compute_s"] / minutes if minutes else float("nan"), len(lsd),
                 f"mean {np.mean(lsd):.2f}" if lsd else "n/a")
    count = write_manifest(all_rows, args.output_dir, methods=VOCODER_FAMILIES, manifest_name=MANIFEST_NAME)
    log.info("manifest: %s lists %d neural spoofs", args.output_dir / MANIFEST_NAME, count)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
