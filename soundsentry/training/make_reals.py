"""Real speech that Debian packages ship: sources no scorer trained on, for the operating point.

Each :class:`RealSource` names its Debian package, where its recordings lie once installed, their
licence and language, and how a file's speaker is told (the unit that keeps one voice on one side
of a split). ``python -m scripts.make_reals`` (``make reals``, seconds) lists the installed ones in
``cache/reals/manifest.csv`` (absolute paths into ``/usr/share``; nothing is copied):

- ``festvox_ru``: the 620 prompts one Russian reader recorded for festival's ``msu_ru_nsh`` clunits
  voice (16 kHz PCM, BSD-like licence);
- ``fillets_cs``: the Czech voice acting of the game *Fish Fillets NG* (Vorbis 22.05 kHz, GPL-2);
  the speaker is the character's letter in the file name (``let-m-oko.ogg``: ``m``);
- ``klettres``: letters and syllables spoken for the KLettres alphabet tutor in 19 languages
  (Vorbis 44.1 kHz, GPL-2+), one speaker per language; ``klettres_joined``: the same clips, each
  speaker's in order, joined with 0.3 s of silence into recordings of at least 10 s (written to
  ``cache/reals/joined``, FLAC at the clips' own rate), so that this source also reaches the
  longer duration categories and the browser chunk condition.

They differ from the training corpus in language, channel and codec, which is what an operating
point must survive; their clips are short (1-3 s for the last two), like the speech in a browser chunk.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from soundsentry.training.make_spoofs import say, write_manifest_rows
from soundsentry.training.zoo import debian_version

COLUMNS = ("path", "label", "source", "system", "speaker", "duration_s", "language", "licence", "package")


@dataclass(frozen=True)
class RealSource:
    name: str
    package: str
    root: Path
    pattern: str  # glob under root
    licence: str
    language: Callable[[Path], str]
    speaker: Callable[[Path], str]
    join_s: float | None = None  # join each speaker's clips into recordings of at least this long

    def files(self) -> list[Path]:
        return sorted(self.root.glob(self.pattern)) if self.root.is_dir() else []


_FILLETS_SPEAKER = re.compile(r"^[a-z0-9]+-([a-z0-9]+)-")


def _fillets_speaker(path: Path) -> str:
    match = _FILLETS_SPEAKER.match(path.name)
    return "fillets-" + (match.group(1) if match else "other")


SOURCES = {
    source.name: source
    for source in (
        RealSource("festvox_ru", "festvox-ru", Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"),
                   "*.wav", "BSD-like (Nickolay V. Shmyrev, 2005)", lambda p: "ru", lambda p: "msu_ru_nsh"),
        RealSource("fillets_cs", "fillets-ng-data-cs", Path("/usr/share/games/fillets-ng/sound"), "*/cs/*.ogg",
                   "GPL-2", lambda p: "cs",
                   _fillets_speaker),
        RealSource("klettres", "klettres-data", Path("/usr/share/klettres"), "*/*/*.ogg", "GPL-2+",
                   lambda p: p.parts[-3], lambda p: "klettres-" + p.parts[-3]),
        RealSource("klettres_joined", "klettres-data", Path("/usr/share/klettres"), "*/*/*.ogg", "GPL-2+",
                   lambda p: p.parts[-3], lambda p: "klettres-" + p.parts[-3], join_s=10.0),
    )
}


JOIN_GAP_S = 0.3


def join_clips(source: RealSource, files: list[Path], output_dir: Path) -> list[tuple[Path, Path]]:
    """Each speaker's clips, in order, joined with :data:`JOIN_GAP_S` of silence into recordings of at
    least ``source.join_s`` (a shorter rest is dropped), at the first clip's rate (clips at another
    rate are left out). Returns (written FLAC, its first clip) pairs."""
    by_speaker: dict[str, list[Path]] = {}
    for path in files:
        by_speaker.setdefault(source.speaker(path), []).append(path)
    written = []
    output_dir.mkdir(parents=True, exist_ok=True)
    for speaker, paths in sorted(by_speaker.items()):
        pieces, length, rate, index = [], 0.0, None, 0
        for path in paths:
            samples, clip_rate = sf.read(path, dtype="float32", always_2d=True)
            rate = rate or clip_rate
            if clip_rate != rate:
                continue
            pieces += [samples.mean(axis=1), np.zeros(int(JOIN_GAP_S * rate), dtype=np.float32)]
            length += samples.shape[0] / rate + JOIN_GAP_S
            if length >= source.join_s:
                target = output_dir / f"{speaker}-{index:03d}.flac"
                sf.write(target, np.concatenate(pieces[:-1]), rate)
                written.append((target, paths[0]))
                pieces, length, index = [], 0.0, index + 1
    return written


def rows(source: RealSource, per_source: int | None, seed: int = 0,
         joined_dir: Path = Path("cache/reals/joined")) -> list[dict]:
    """Manifest rows of ``source``: every file (or joined recording), or ``per_source`` of them drawn with ``seed``."""
    files = [(path, path) for path in source.files()]  # (file, the clip its speaker and language come from)
    if source.join_s is not None and files:
        files = join_clips(source, [path for path, _ in files], joined_dir / source.name)
    if per_source is not None and len(files) > per_source:
        keep = np.random.default_rng(seed).choice(len(files), per_source, replace=False)
        files = [files[i] for i in sorted(keep)]
    version = debian_version(source.package)
    return [{"path": str(path.resolve()), "label": "real", "source": source.name, "system": "bonafide",
             "speaker": source.speaker(origin), "duration_s": f"{sf.info(path).duration:.3f}",
             "language": source.language(origin), "licence": source.licence,
             "package": f"{source.package} {version}"} for path, origin in files]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--per-source", type=int, default=600, help="at most this many files per source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("cache/reals"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    listed, missing = [], []
    for name in args.sources:
        source = SOURCES[name]
        found = rows(source, args.per_source, args.seed, args.output_dir / "joined")
        if found:
            listed.extend(found)
        else:
            missing.append(f"{name} (apt-get install {source.package})")
    if missing:
        say(f"not installed: {', '.join(missing)}")
    if not listed:
        say("no real source installed; run scripts/setup.sh --dev")
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    count = write_manifest_rows(args.output_dir / "manifest.csv", listed, COLUMNS)
    minutes = sum(float(r["duration_s"]) for r in listed) / 60
    say(f"{count} real files ({minutes:.1f} min) from {len(args.sources) - len(missing)} sources "
          f"→ {args.output_dir / 'manifest.csv'}")
    return 0
