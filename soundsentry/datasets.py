"""Labelled audio collections: manifests (CSV) and ``real/`` + ``fake/`` folders.

Every loader returns :class:`AudioItem` rows with the same fields, so feature extraction, training
and evaluation accept any of them. The CSV layout is the one of ``../shared/corpus/manifest.csv``:
``path`` (relative to the CSV's folder unless absolute), ``label`` (real | fake), and optional
``source``, ``system``, ``speaker``, ``duration_s``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".webm", ".m4a", ".aac", ".mp4"}
LABELS = {"real": 0, "bonafide": 0, "bona-fide": 0, "fake": 1, "spoof": 1}


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


def read_folders(directory: Path) -> list[AudioItem]:
    """Items of ``directory/real`` and ``directory/fake`` (searched recursively)."""
    items = []
    for name, label in (("real", 0), ("fake", 1)):
        folder = directory / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                items.append(AudioItem(path=path, label=label, source=directory.name, system=name))
    if not items:
        raise ValueError(f"no audio under {directory}/real or {directory}/fake")
    return items


def load_items(location: Path) -> list[AudioItem]:
    """A manifest CSV, a folder holding ``manifest.csv``, or a folder with ``real/`` and ``fake/``."""
    if location.is_file():
        return read_manifest(location)
    if (location / "manifest.csv").is_file():
        return read_manifest(location / "manifest.csv")
    return read_folders(location)
