"""Make vocoder re-synthesis fakes from the corpus's real utterances (LibriSpeech unless --sources says otherwise).

    python -m scripts.make_spoofs [--corpus ../shared/corpus] [--output-dir cache/spoofs]
                                  [--methods griffin_lim world lpc] [--sources librispeech] [--limit N] [--seed 0]

Every real file of ``CORPUS/manifest.csv`` whose source is one of ``--sources`` (default
``librispeech``) is re-synthesised by each of ``--methods`` (keys of
``soundsentry.training.spoofs.SPOOF_METHODS``: the three DSP ones by default, or ``lpcnet``) and written as
16 kHz 16-bit FLAC to ``OUTPUT_DIR/<method>/<file name>`` (:func:`relative_name`: no "real" folder in a
fake's path). ``OUTPUT_DIR/manifest.csv`` then lists every spoof present, with the corpus manifest's columns
(label ``fake``, source ``resynth_<method>``, system ``<method>``, the original's speaker and licence,
origin = the original's path in the corpus), so loaders can concatenate the two manifests.

Reproducible: each file's seed derives from ``--seed``, the method and the file's path, not from the
order of work. Resumable: files already present are skipped (written under a temporary name and
renamed, so an interrupted run leaves no half file). Single-threaded by design (shared machines).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from soundsentry.constants import CHECKOUT
from soundsentry.training.spoofs import DSP_METHODS, SAMPLE_RATE, SPOOF_METHODS, log_spectral_distance, resynthesize

ROOT = CHECKOUT
SOURCE = "librispeech"  # the default --sources: the corpus's read speech, many speakers
COLUMNS = ("path", "label", "source", "system", "speaker", "duration_s", "licence", "origin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="corpus folder holding manifest.csv (default ../shared/corpus)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "cache" / "spoofs",
                        help="where the spoofs and their manifest.csv go (default cache/spoofs)")
    parser.add_argument("--methods", nargs="+", default=list(DSP_METHODS), choices=list(SPOOF_METHODS),
                        help=f"spoof methods to run (default: {' '.join(DSP_METHODS)}; lpcnet, LPCNet's "
                             "copy-synthesis, takes 0.7 s per audio second)")
    add_sources_argument(parser)
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N source files (quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="redo files already present")
    parser.add_argument("--report-lsd", type=int, default=2, metavar="N",
                        help="print the log-spectral distance to the original for the first N "
                             "files made per method (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser.parse_args(argv)


def add_sources_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", nargs="+", default=[SOURCE], metavar="SOURCE",
                        help=f"corpus sources whose reals are re-synthesised (default {SOURCE}; "
                             "the corpus also has algan_vc)")


def read_sources(corpus: Path, sources: Sequence[str] = (SOURCE,)) -> list[dict[str, str]]:
    """The real rows of ``corpus``'s manifest whose source is one of ``sources``."""
    manifest = corpus / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest}; pass --corpus DIR")
    with manifest.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle)
                if row["source"] in sources and row["label"] == "real"]
    if not rows:
        raise SystemExit(f"{manifest} lists no real files of source {', '.join(sources)}")
    return rows


def relative_name(corpus_path: str) -> Path:
    """A fake's path below its method's folder, with no "real" folder in it.

    ``librispeech/real/x/y.flac`` -> ``x/y.flac`` (the default source, as the caches were first made);
    any other source keeps its name so that two sources never share a path:
    ``algan_vc/real/z.flac`` -> ``algan_vc/z.flac``.
    """
    parts = Path(corpus_path).parts
    if parts[:1] == (SOURCE,):
        parts = parts[2:] if parts[1:2] == ("real",) else parts[1:]
    elif parts[1:2] == ("real",):
        parts = parts[:1] + parts[2:]
    return Path(*parts).with_suffix(".flac")


def file_seed(base: int, method: str, corpus_path: str) -> int:
    return zlib.crc32(f"{base}:{method}:{corpus_path}".encode())


def say(line: str) -> None:
    """One progress line on stdout, flushed at once (a run takes minutes and is often logged to a file)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def load(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE} Hz")
    return samples.mean(axis=1)


def write_flac(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    sf.write(partial, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(partial, path)


def run_method(method: str, rows: list[dict[str, str]], args: argparse.Namespace) -> dict[str, float]:
    stats = {"made": 0, "skipped": 0, "failed": 0, "audio_s": 0.0, "compute_s": 0.0, "wall_s": 0.0}
    reported = 0
    started = time.perf_counter()
    for row in tqdm(rows, desc=method, unit="file", mininterval=5.0, file=sys.stderr):
        out = args.output_dir / method / relative_name(row["path"])
        if out.exists() and not args.overwrite:
            stats["skipped"] += 1
            continue
        try:
            samples = load(args.corpus / row["path"])
            tick = time.perf_counter()
            fake = resynthesize(samples, method, sample_rate=SAMPLE_RATE,
                                seed=file_seed(args.seed, method, row["path"]))
            stats["compute_s"] += time.perf_counter() - tick
            write_flac(out, fake)
        except Exception as error:  # one bad file must not stop a long run
            stats["failed"] += 1
            tqdm.write(f"[{method}] FAILED {row['path']}: {type(error).__name__}: {error}")
            continue
        stats["made"] += 1
        stats["audio_s"] += len(samples) / SAMPLE_RATE
        if reported < args.report_lsd:
            reported += 1
            lsd = log_spectral_distance(samples, fake)
            tqdm.write(f"[{method}] {row['path']}: log-spectral distance to the original {lsd:.2f} dB")
    stats["wall_s"] = time.perf_counter() - started
    return stats


def write_manifest(
    rows: list[dict[str, str]], output_dir: Path, methods=tuple(SPOOF_METHODS), manifest_name: str = "manifest.csv"
) -> int:
    """List every spoof of ``methods`` present under ``output_dir`` (not only this run's) in ``manifest_name``."""
    entries = []
    for method in methods:
        for row in rows:
            relative = Path(method) / relative_name(row["path"])
            path = output_dir / relative
            if not path.is_file():
                continue
            info = sf.info(path)
            entries.append({
                "path": relative.as_posix(),
                "label": "fake",
                "source": f"resynth_{method}",
                "system": method,
                "speaker": row["speaker"],
                "duration_s": f"{info.frames / info.samplerate:.3f}",
                "licence": row["licence"],
                "origin": row["path"],
            })
    output_dir.mkdir(parents=True, exist_ok=True)
    return write_manifest_rows(output_dir / manifest_name, entries, COLUMNS)


def write_manifest_rows(manifest: Path, rows: list[dict], columns: Sequence[str]) -> int:
    """Write ``rows`` as a CSV manifest under a temporary name, then rename: never a half manifest."""
    partial = manifest.with_name(manifest.name + ".part")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, manifest)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    rows = read_sources(args.corpus, args.sources)
    if args.limit is not None:
        rows = rows[: max(0, args.limit)]
    total_audio = sum(float(row["duration_s"]) for row in rows)
    say(f"{len(rows)} {'/'.join(args.sources)} files, {total_audio / 60:.1f} min of audio; methods: "
        f"{', '.join(args.methods)}; output: {args.output_dir}")
    failed = 0
    for method in args.methods:
        stats = run_method(method, rows, args)
        failed += int(stats["failed"])
        minutes = stats["audio_s"] / 60
        per_minute = stats["compute_s"] / minutes if minutes else float("nan")
        say(f"[{method}] made {stats['made']:.0f}, skipped {stats['skipped']:.0f}, "
            f"failed {stats['failed']:.0f}; {minutes:.1f} min of audio in "
            f"{stats['compute_s']:.0f} s of synthesis ({per_minute:.1f} s per audio minute), "
            f"{stats['wall_s']:.0f} s wall")
    count = write_manifest(read_sources(args.corpus, args.sources), args.output_dir)
    say(f"manifest: {args.output_dir / 'manifest.csv'} lists {count} spoofs")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
