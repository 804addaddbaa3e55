"""Scorers: each turns speech segments into P(fake), behind one contract, loaded by one registry.

A scorer has

- ``name``: its member name in the fusion (``tkan``, ``cnn``, ``flatness``);
- ``files``: the artefact files it was loaded from (the fusion checks they are the ones it was fitted with);
- ``thresholds``: its own decision threshold per duration category, or ``None`` when it only scores
  inside a fusion;
- ``score(samples, segments)``: ``(segment,)`` P(fake) of each :class:`~soundsentry.speech.segments.ScoringSegment`
  of 16 kHz mono ``samples``; thread-safe;
- ``models()``: the lines it adds to a report's ``models`` (names and versions, no server paths);
- ``info()``: how it was made (feature definition, training metadata), for ``/info``.

:func:`load_members` is the one way the detector, fusion training, the benchmark and the evaluation
get them: the members the fusion weighs, each from its artefact directory. Adding a scorer is a module
here with a ``load(directory, context)`` and one :data:`REGISTRY` entry.

Without a fusion (``fusion.json``), a directory scores in **single-member mode**: the one registered
scorer that carries its own thresholds and whose files are there (today the TKAN classifier, as
``scripts.train_classifier`` writes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from soundsentry.errors import ModelLoadError
from soundsentry.fusion import FUSION_FILE, MEMBERS, Fusion, check_member_artefacts
from soundsentry.scorers.base import LoadContext, Scorer
from soundsentry.scorers.cnn import CnnScorer
from soundsentry.scorers.flatness import BandFlatnessScorer
from soundsentry.scorers.tkan import TkanScorer

__all__ = ["REGISTRY", "LoadContext", "Scorer", "load_fusion", "load_member", "load_members", "thresholds_of"]

# the fusion's member names; a new scorer is a module here and one entry
REGISTRY: dict[str, type[Scorer]] = {scorer.name: scorer for scorer in (TkanScorer, CnnScorer, BandFlatnessScorer)}
if tuple(REGISTRY) != MEMBERS:
    raise ImportError(f"the registry's members {tuple(REGISTRY)} must be the fusion's {MEMBERS}, in its order")


def load_member(name: str, directory: Path, context: LoadContext = LoadContext()) -> Scorer:
    """One scorer by name from ``directory`` (a :class:`ModelLoadError` when it is missing or unreadable)."""
    if name not in REGISTRY:
        raise ValueError(f"no scorer named {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name].load(directory, context)


def load_members(
    fusion: Fusion | None, directory: Path, context: LoadContext = LoadContext()
) -> dict[str, Scorer]:
    """The scorers ``fusion`` weighs (non-zero weight), in member order, each from its directory.

    Checks each member's files are the ones the fusion was fitted with. ``fusion=None`` is single-member
    mode (module docstring). Raises :class:`ModelLoadError` with what to do.
    """
    if fusion is None:
        alone = _single_member(directory, context)
        return {alone.name: alone.load(context.directories.get(alone.name, directory), context)}
    members = {}
    for name in fusion.active_members:
        where = context.directories.get(name, directory)
        artefacts = {f: h for f, h in fusion.metadata.get("artefacts", {}).items() if f in REGISTRY[name].files}
        check_member_artefacts(replace(fusion, metadata={"artefacts": artefacts}), where)
        members[name] = REGISTRY[name].load(where, context)
    return members


def _single_member(directory: Path, context: LoadContext) -> type[Scorer]:
    """The stand-alone scorer whose files are all in the directory; else the first, whose loader says
    which file is missing and how to restore it."""
    alone = [entry for entry in REGISTRY.values() if entry.stands_alone]
    for entry in alone:
        where = context.directories.get(entry.name, directory)
        if all((where / name).is_file() for name in entry.files):
            return entry
    return alone[0]


def thresholds_of(fusion: Fusion | None, members: Mapping[str, Scorer]) -> dict[str, float]:
    """The decision thresholds: the fusion's, or in single-member mode the member's own."""
    if fusion is not None:
        return dict(fusion.thresholds)
    (member,) = members.values()
    if member.thresholds is None:
        raise ModelLoadError(f"the {member.name} scorer has no thresholds of its own: it needs a {FUSION_FILE}")
    return dict(member.thresholds)


def uncertain_from(fusion: Fusion | None, thresholds: Mapping[str, float]) -> dict[str, float]:
    """Where each category's ``uncertain`` zone begins: the calibration's equal-error thresholds that an
    operating point (:mod:`soundsentry.training.fit_operating_point`) raised the decision thresholds from,
    never above the decision threshold; without an operating point, the decision thresholds (no zone)."""
    eer = (fusion.metadata.get("operating_point", {}).get("eer_thresholds", {}) if fusion is not None else {})
    return {category: min(float(eer.get(category, value)), value) for category, value in thresholds.items()}


def load_fusion(directory: Path) -> Fusion | None:
    """``directory/fusion.json``, or ``None`` when there is none (single-member mode)."""
    path = directory / FUSION_FILE
    return Fusion.load(path) if path.is_file() else None
