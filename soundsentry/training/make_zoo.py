"""Render the generator zoo's fakes (:mod:`soundsentry.training.zoo`) with a manifest that says how each was made.

    python -m scripts.make_zoo [--corpus ../shared/corpus] [--output-dir cache/zoo] [--per-family 150]
                               [--generators piper hibari ...] [--seed 0]

Each family gets about ``--per-family`` files, shared evenly between its generators' voices (or modes):

- text-to-speech: 1-3 sentences of :func:`~soundsentry.training.zoo.load_texts` per file, a speaking rate
  of 0.85-1.2 and a pitch of 0.85-1.15 of the voice's own (where the generator honours them);
- copy-synthesis: LibriSpeech reals of ``--corpus`` re-synthesised (same speaker, same words).

Files are written at the generator's own sample rate as 16-bit FLAC to
``OUTPUT_DIR/<generator>/<voice>/<n>.flac``. Three things a synthesiser does differently from a
recording are evened out, or they would teach the label: the leading and trailing silence is cut to
what the corpus's reals keep; each fake takes a **room**, a LibriSpeech real of the corpus (its own
original for copy-synthesis), whose level it gets and whose background (its quiet frames) is laid
under it, so that no fake has digital silence. ``python -m scripts.check_shortcuts`` measures what
trivial properties still predict the label.
``OUTPUT_DIR/manifest.csv`` has the corpus manifest's columns
(label ``fake``, source ``zoo_<family>``, system ``<generator>:<voice>``, speaker = the voice, or the
original's speaker for copy-synthesis) plus ``family``, ``generator``, ``voice``, ``version``, ``text``,
``text_source``, ``text_licence``, ``speed``, ``pitch``, ``seed``, ``room`` and ``sample_rate``.

Reproducible: the plan (which text, voice, rate, pitch and seed each file gets) depends only on the
arguments; Piper's own sampling noise is the one thing not seeded. Resumable: files present are kept.
About 10 minutes on one core for the default plan (555 s measured; LPCNet is 7 minutes of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from soundsentry.constants import CHECKOUT
from soundsentry.training.make_spoofs import COLUMNS as CORPUS_COLUMNS
from soundsentry.training.make_spoofs import load, read_sources, say, write_manifest_rows
from soundsentry.training.zoo import GENERATORS, family_of, load_texts, varies

COLUMNS = (*CORPUS_COLUMNS, "family", "generator", "voice", "version", "text", "text_source", "text_licence",
           "speed", "pitch", "seed", "room", "sample_rate")
LEVEL_DBFS = (-30.0, -18.0)


@dataclass(frozen=True)
class Job:
    path: str  # below the output directory
    generator: str
    voice: str  # a voice, or a copy-synthesis mode
    family: str
    seed: int
    speed: float = 1.0
    pitch: float = 1.0
    text: str = ""
    text_source: str = ""
    text_licence: str = ""
    origin: str = ""  # copy-synthesis: the real's path in the corpus
    speaker: str = ""
    licence: str = ""
    room: str = ""  # the corpus real whose level and background noise the fake takes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CHECKOUT.parent / "shared" / "corpus",
                        help="corpus whose LibriSpeech reals copy-synthesis re-synthesises (default ../shared/corpus)")
    parser.add_argument("--output-dir", type=Path, default=CHECKOUT / "cache" / "zoo")
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    parser.add_argument("--per-family", type=int, default=150, help="files per family (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _seed(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def plan(generators: list[str], per_family: int, seed: int, reals: list[dict[str, str]]) -> list[Job]:
    """Every file the zoo should hold, in a fixed order; depends only on the arguments."""
    texts = load_texts()
    by_family: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name in generators:
        generator = GENERATORS[name]
        for voice in (generator.voices if generator.kind == "tts" else generator.modes):
            by_family[family_of(generator, voice)].append((name, voice))
    jobs = []
    for family, members in by_family.items():
        for slot, (name, voice) in enumerate(members):
            generator = GENERATORS[name]
            count = per_family // len(members) + (slot < per_family % len(members))
            rng = np.random.default_rng(_seed(seed, name, voice))
            if generator.kind == "copy":
                if not reals:
                    continue
                chosen = rng.choice(len(reals), size=min(count, len(reals)), replace=False)
                for n, index in enumerate(sorted(chosen)):
                    real = reals[index]
                    jobs.append(Job(f"{name}/{voice}/{n:04d}.flac", name, voice, family, _seed(seed, name, voice, n),
                                    origin=real["path"], speaker=real["speaker"], room=real["path"],
                                    licence=f"{generator.licence}; source audio {real['licence']}"))
                continue
            if not texts:
                continue
            honours = varies(generator, voice)
            for n in range(count):
                chosen = [texts[i] for i in rng.choice(len(texts), size=int(rng.integers(1, 4)), replace=False)]
                speed = float(rng.uniform(0.85, 1.2)) if "speed" in honours else 1.0
                pitch = float(rng.uniform(0.85, 1.15)) if "pitch" in honours else 1.0
                jobs.append(Job(f"{name}/{voice}/{n:04d}.flac", name, voice, family, _seed(seed, name, voice, n),
                                round(speed, 3), round(pitch, 3), " ".join(t.text for t in chosen),
                                "+".join(sorted({t.source for t in chosen})),
                                "; ".join(sorted({t.licence for t in chosen})), speaker=f"{name}/{voice}",
                                licence=generator.licence,
                                room=reals[int(rng.integers(len(reals)))]["path"] if reals else ""))
    return jobs


def render(job: Job, corpus: Path) -> tuple[np.ndarray, int]:
    generator = GENERATORS[job.generator]
    original = load(corpus / job.origin) if job.origin else None
    if generator.kind == "copy":
        samples, rate = generator.resynthesise(original, job.voice)
    else:
        samples, rate = generator.speak(job.text, job.voice, speed=job.speed, pitch=job.pitch, seed=job.seed)
    samples = trim_edges(np.asarray(samples, dtype=np.float64), rate, np.random.default_rng(job.seed + 1))
    rms = float(np.sqrt(np.mean(samples**2)))
    if not np.isfinite(rms) or rms < 1e-5:
        raise RuntimeError("the generator returned silence")
    if job.room:  # the room's level, and its background under the synthetic speech
        room = (original if job.room == job.origin else load(corpus / job.room)).astype(np.float64)
        samples *= float(np.sqrt(np.mean(room**2))) / rms
        samples += background(room, len(samples), rate)
    else:
        samples *= 10 ** (np.random.default_rng(job.seed).uniform(*LEVEL_DBFS) / 20) / rms
    samples /= max(1.0, float(np.abs(samples).max()) / 0.99)  # never clip
    return samples.astype(np.float32), rate


def background(room: np.ndarray, length: int, rate: int, frame: int = 400) -> np.ndarray:
    """``length`` samples at ``rate`` of a 16 kHz recording's background: its quiet 25 ms frames (35 dB
    under its loudest, else its quietest tenth), joined and repeated. Synthesisers write digital
    silence between words and under speech; a real recording never does, and that difference alone
    would teach "no noise floor = fake"."""
    n = len(room) // frame
    frames = room[: n * frame].reshape(n, frame)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    quiet = frames[level < level.max() - 35.0]
    if len(quiet) < 4:
        quiet = frames[np.argsort(level)[: max(1, n // 10)]]
    bed = quiet.reshape(-1)
    if rate != 16000:
        g = gcd(rate, 16000)
        bed = resample_poly(bed, rate // g, 16000 // g)
    return np.resize(bed, length)


def trim_edges(samples: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Cut the leading and trailing silence to what the corpus's reals keep (a lead of up to 0.5 s, a
    trail of up to 0.4 s; LibriSpeech's median is 0.2 s each): synthesisers pad both ends their own way,
    and the difference would teach "this much silence = fake". Only cuts, never pads."""
    frame = max(1, rate // 100)
    n = len(samples) // frame
    if n < 3:
        return samples
    level = 10 * np.log10(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    voiced = np.flatnonzero(level > level.max() - 35.0)
    start = max(0, voiced[0] * frame - int(rng.uniform(0.0, 0.5) * rate))
    end = min(len(samples), (voiced[-1] + 1) * frame + int(rng.uniform(0.0, 0.4) * rate))
    return samples[start:end]


def write(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    sf.write(partial, samples, rate, format="FLAC", subtype="PCM_16")
    os.replace(partial, path)


def write_manifest(jobs: list[Job], output_dir: Path, versions: dict[str, str]) -> int:
    rows = []
    for job in jobs:
        path = output_dir / job.path
        if not path.is_file():
            continue
        info = sf.info(path)
        fields = asdict(job)
        rows.append({**{k: fields[k] for k in ("path", "family", "generator", "voice", "seed", "speed", "pitch",
                                               "text", "text_source", "text_licence", "speaker", "licence", "origin",
                                               "room")},
                     "label": "fake", "source": f"zoo_{job.family}", "system": f"{job.generator}:{job.voice}",
                     "duration_s": f"{info.frames / info.samplerate:.3f}", "version": versions[job.generator],
                     "sample_rate": info.samplerate})
    output_dir.mkdir(parents=True, exist_ok=True)
    return write_manifest_rows(output_dir / "manifest.csv", rows, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = {name: why for name in args.generators if (why := GENERATORS[name].missing())}
    if missing:
        raise SystemExit("generators missing here:\n" + "\n".join(f"  {name}: {why}" for name, why in missing.items()))
    reals = read_sources(args.corpus)  # copy-synthesis sources, and every fake's room
    jobs = plan(args.generators, args.per_family, args.seed, reals)
    versions = {name: GENERATORS[name].version() for name in args.generators}
    say(f"{len(jobs)} files planned in {len({j.family for j in jobs})} families; output {args.output_dir}")
    made = failed = 0
    started = time.perf_counter()
    for n, job in enumerate(jobs):
        out = args.output_dir / job.path
        if out.is_file():
            continue
        try:
            write(out, *render(job, args.corpus))
            made += 1
        except Exception as error:  # one bad utterance must not stop the run
            failed += 1
            say(f"FAILED {job.path}: {type(error).__name__}: {error}")
        if made and made % 200 == 0:
            say(f"{n + 1}/{len(jobs)} ({time.perf_counter() - started:.0f} s)")
    listed = write_manifest(jobs, args.output_dir, versions)
    say(f"made {made}, failed {failed}, {listed} files in {args.output_dir / 'manifest.csv'} "
        f"({time.perf_counter() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
