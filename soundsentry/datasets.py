"""Labelled audio collections: manifests (CSV), ``real/`` + ``fake/`` folders and public corpora.

Every loader returns :class:`AudioItem` rows with the same fields, so feature extraction, training
and evaluation accept any of them. The CSV layout is the one of ``../shared/corpus/manifest.csv``:
``path`` (relative to the CSV's folder unless absolute), ``label`` (real | fake), and optional
``source``, ``system``, ``speaker``, ``duration_s``. :func:`load_items` recognises, besides those,
the release layouts of In-the-Wild, ASVspoof 2019 LA, ASVspoof 2021 LA/DF and Fake-or-Real, read
in place (nothing is copied or downloaded).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".webm", ".m4a", ".aac", ".mp4"}
LABELS = {"real": 0, "bonafide": 0, "bona-fide": 0, "fake": 1, "spoof": 1}
LAYOUTS = (
    "a manifest CSV (path,label[,source,system,speaker]) or a folder holding manifest.csv; "
    "In-the-Wild (a folder holding meta.csv with file,speaker,label); "
    "an ASVspoof 2019 LA protocol (ASVspoof2019.LA.cm.{train,dev,eval}.{trn,trl}.txt), "
    "an ASVspoof 2021 LA/DF key (keys/CM/trial_metadata.txt) or a folder holding them; "
    "a folder with real/ and fake/; "
    "a folder of splits each with real/ and fake/ (Fake-or-Real: training/, validation/, testing/)"
)
ASVSPOOF2019_PROTOCOL = re.compile(r"ASVspoof2019\.LA\.cm\.(train|dev|eval)\.(trn|trl)\.txt")
ASVSPOOF2021_KEY = "trial_metadata.txt"


@dataclass(frozen=True)
class AudioItem:
    path: Path
    label: int  # 1 = fake
    source: str = ""
    system: str = ""
    speaker: str = ""

    @property
    def label_name(self) -> str:
        return "fake" if self.label else "real"


def parse_label(value: str) -> int:
    try:
        return LABELS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown label {value!r}: use one of {sorted(LABELS)}") from None


def _csv_columns(csv_path: Path) -> set[str]:
    with csv_path.open(newline="") as handle:
        return set(next(csv.reader(handle), []))


def read_manifest(csv_path: Path) -> list[AudioItem]:
    """Items of a manifest CSV with at least ``path`` and ``label`` columns."""
    root = csv_path.parent
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        items = []
        for row in reader:
            path = Path(row["path"])
            items.append(
                AudioItem(
                    path=path if path.is_absolute() else root / path,
                    label=parse_label(row["label"]),
                    source=row.get("source") or "",
                    system=row.get("system") or "",
                    speaker=row.get("speaker") or "",
                )
            )
    return items


def read_in_the_wild(meta_csv: Path) -> list[AudioItem]:
    """In-the-Wild (Müller et al., 2022): ``meta.csv`` (file, speaker, label = bona-fide | spoof)
    beside the audio files. The release names no generator, so ``system`` stays empty."""
    with meta_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{meta_csv} lacks the column(s) {sorted(missing)}")
        return [
            AudioItem(path=meta_csv.parent / row["file"], label=parse_label(row["label"]), source="in_the_wild",
                      speaker=row.get("speaker") or "")
            for row in reader
        ]


def _find_audio_folder(protocol: Path, name: str) -> Path:
    """``name/flac`` (or ``name``) beside the protocol or beside one of its parent folders: the
    releases unpack protocols and audio into sibling folders at different depths."""
    candidates = [parent / name / sub for parent in list(protocol.parents)[:5] for sub in ("flac", "")]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ValueError(f"{protocol}: its audio folder {name}/flac is in none of {[str(c) for c in candidates[::2]]}")


def read_asvspoof_protocol(protocol: Path) -> list[AudioItem]:
    """An ASVspoof 2019 LA CM protocol or a 2021 LA/DF ``trial_metadata.txt`` key.

    Lines are whitespace-separated: speaker, utterance id, then columns that differ between years
    and tracks. The label is the first ``bonafide``/``spoof`` token and the system the token just
    before it (``A07``, ``Task1-team20``; ``-`` for bona fide, stored as ""), found by value rather
    than by fixed column, so 2019 protocols and 2021 LA and DF keys all read the same way.
    """
    match = ASVSPOOF2019_PROTOCOL.fullmatch(protocol.name)
    folders: dict[str, Path] = {}
    items = []
    for line in protocol.read_text().splitlines():
        tokens = line.split()
        position = next((i for i, t in enumerate(tokens) if i >= 2 and t in ("bonafide", "spoof")), None)
        if position is None:
            continue
        speaker, utterance, system = tokens[0], tokens[1], tokens[position - 1]
        if match:
            source, folder_name = f"asvspoof2019_la/{match.group(1)}", f"ASVspoof2019_LA_{match.group(1)}"
        else:  # 2021: the track is the utterance id's prefix (LA_E_…, DF_E_…)
            track = utterance.split("_")[0]
            source, folder_name = f"asvspoof2021_{track.lower()}", f"ASVspoof2021_{track}_eval"
        if folder_name not in folders:
            folders[folder_name] = _find_audio_folder(protocol, folder_name)
        items.append(AudioItem(path=folders[folder_name] / f"{utterance}.flac", label=parse_label(tokens[position]),
                               source=source, system="" if system in ("-", "bonafide") else system,
                               speaker=speaker))
    if not items:
        raise ValueError(f"{protocol} has no line with a bonafide/spoof label")
    return items


def find_asvspoof_protocols(root: Path, depth: int = 4) -> list[Path]:
    """ASVspoof protocol files up to ``depth`` folders below ``root`` (audio folders are not listed)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        level = len(Path(folder).relative_to(root).parts)
        subfolders[:] = [] if level >= depth else sorted(s for s in subfolders if s not in ("flac", "wav"))
        found += [Path(folder) / f for f in sorted(files)
                  if ASVSPOOF2019_PROTOCOL.fullmatch(f) or f == ASVSPOOF2021_KEY]
    return found


def read_folders(directory: Path, source: str | None = None) -> list[AudioItem]:
    """Items of ``directory/real`` and ``directory/fake`` (searched recursively)."""
    items = []
    for name, label in (("real", 0), ("fake", 1)):
        folder = directory / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                items.append(AudioItem(path=path, label=label, source=source or directory.name, system=name))
    if not items:
        raise ValueError(f"no audio under {directory}/real or {directory}/fake")
    return items


def _has_real_fake(directory: Path) -> bool:
    return (directory / "real").is_dir() or (directory / "fake").is_dir()


def read_split_folders(root: Path) -> list[AudioItem]:
    """Fake-or-Real style: ``root/<split>/real`` and ``root/<split>/fake`` for each split
    (``training``, ``validation``, ``testing``); the source is ``<root name>/<split>``."""
    splits = sorted(d for d in root.iterdir() if d.is_dir() and _has_real_fake(d))
    if not splits:
        raise ValueError(f"no split folder with real/ or fake/ under {root}")
    return [item for split in splits for item in read_folders(split, source=f"{root.name}/{split.name}")]


def load_items(location: Path) -> list[AudioItem]:
    """Items of any layout listed in :data:`LAYOUTS`, recognised by file names and CSV columns."""
    location = Path(location)
    if not location.exists():
        raise ValueError(f"{location} does not exist")
    if location.is_file():
        if location.suffix.lower() == ".txt":
            return read_asvspoof_protocol(location)
        columns = _csv_columns(location)
        if "path" not in columns and "file" in columns:
            return read_in_the_wild(location)
        return read_manifest(location)
    if (location / "manifest.csv").is_file():
        return read_manifest(location / "manifest.csv")
    if (location / "meta.csv").is_file():
        return read_in_the_wild(location / "meta.csv")
    if _has_real_fake(location):
        return read_folders(location)
    if any(d.is_dir() and _has_real_fake(d) for d in location.iterdir()):
        return read_split_folders(location)
    protocols = find_asvspoof_protocols(location)
    if protocols:
        return [item for protocol in protocols for item in read_asvspoof_protocol(protocol)]
    raise ValueError(f"{location} matches none of the layouts understood: {LAYOUTS}")
