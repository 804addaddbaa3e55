"""Conversations with a known fake speaker: the data the recording-aware roll-up is fitted and judged on.

A conversation puts 2-3 speakers' speech into one recording, turn by turn, with pauses and some overlap
(the turn-taking of :func:`soundsentry.evaluation.evaluate_diarization.synthetic_conversation`, so the
reference turns are exact), then sends the whole mix through one channel (none, the browser's WEBM/Opus,
or a random chain of room, noise, band limit and codec), as a call or a video would: every speaker
shares it. Half the conversations are **mixed** (one synthetic speaker among real people), half are
**controls** (all real).

Two pools of speakers feed it:

- **training side** (:func:`training_pools`): real speakers of the Debian-shipped real sources
  (:mod:`soundsentry.training.make_reals`, no scorer trained on them) against the fakes of the
  generator zoo (:mod:`soundsentry.training.make_zoo`, no shipped scorer trained on them): the
  roll-up is fitted here;
- **devset** (:func:`devset_pools`): ``../shared/devset``, each file a speaker (its manifest names no
  speakers), the speakers of a conversation drawn from one source: validation only.

Each conversation records its seed, speakers and channel; :func:`write_conversations` writes the audio,
an RTTM per conversation and ``conversations.csv``.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.core import Annotation, Segment, Timeline

from soundsentry.audio import SAMPLE_RATE
from soundsentry.evaluation.evaluate_diarization import REFERENCE_VAD, ConversationRecipe, synthetic_conversation
from soundsentry.fusion import logit
from soundsentry.report import SegmentResult, SpeakerResult
from soundsentry.rollup import ConversationRollup, overall_verdict
from soundsentry.speech.vad import SileroVad

KINDS = ("mixed", "control")
# 2-3 speakers, 6-12 s each: the length of a short exchange, and of the speech a browser user sends
CONVERSATION_RECIPE = ConversationRecipe(min_speakers=2, max_speakers=3, seconds_per_speaker=(6.0, 12.0))


@dataclass(frozen=True)
class SpeakerPool:
    """Speakers to draw from: name → files, and for each name its source (reals of a conversation share one)."""

    files: dict[str, list[Path]]
    source: dict[str, str]

    def names(self) -> list[str]:
        return sorted(self.files)

    def by_source(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for name in self.names():
            grouped[self.source[name]].append(name)
        return dict(grouped)


@dataclass(frozen=True, eq=False)
class Conversation:
    """One recording and what is true about it.

    Attributes
    ----------
    uri : identifier (the RTTM file id)
    kind : ``mixed`` (one fake speaker) | ``control`` (all real)
    samples : (time,) float32 16 kHz mono, after the channel
    reference : reference speaker turns; labels are ``spk<i>_<name>``
    fake_labels : the reference labels that are synthetic speech
    channel : the channel every speaker went through, described
    seed : the seed that rebuilds this conversation with :func:`build_conversation`
    sources : each reference label → its source (reals) or generator family (fakes)
    """

    uri: str
    kind: str
    samples: np.ndarray
    reference: Annotation
    fake_labels: frozenset[str]
    channel: str
    seed: int
    sources: dict[str, str]

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")


def training_pools(reals_manifest: Path, zoo_manifest: Path) -> tuple[SpeakerPool, SpeakerPool]:
    """(reals, fakes) of the training side. Reals: the speakers of ``make_reals``' manifest (its joined
    KLettres files left out: they repeat the KLettres words); fakes: the zoo's voices (its ``speaker``)."""
    reals: dict[str, list[Path]] = defaultdict(list)
    real_source: dict[str, str] = {}
    with open(reals_manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "real" and not row["source"].endswith("_joined"):
                name = _slug(f"{row['source']}-{row['speaker']}")
                reals[name].append(_resolve(row["path"], reals_manifest.parent))
                real_source[name] = row["source"]
    fakes: dict[str, list[Path]] = defaultdict(list)
    fake_source: dict[str, str] = {}
    with open(zoo_manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "fake":
                name = _slug(f"{row['family']}-{row['speaker']}")
                fakes[name].append(_resolve(row["path"], zoo_manifest.parent))
                fake_source[name] = row["family"]
    return SpeakerPool(dict(reals), real_source), SpeakerPool(dict(fakes), fake_source)


def devset_pools(devset_dir: Path) -> tuple[SpeakerPool, SpeakerPool]:
    """(reals, fakes) of ``../shared/devset``: one file per speaker, its source recorded."""
    pools: dict[str, tuple[dict, dict]] = {"real": ({}, {}), "fake": ({}, {})}
    with open(devset_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            files, source = pools[row["label"]]
            name = _slug(f"{row['source']}-{row['system']}-{Path(row['path']).stem}")
            files[name] = [devset_dir / row["path"]]
            source[name] = row["source"]
    return SpeakerPool(*pools["real"]), SpeakerPool(*pools["fake"])


def _resolve(path: str, root: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def _some(paths: list[Path], rng: np.random.Generator, at_most: int = 24) -> list[Path]:
    """Up to ``at_most`` of a speaker's files (a conversation needs seconds of each speaker, not all of them)."""
    if len(paths) <= at_most:
        return list(paths)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=at_most, replace=False))]


def draw_channel(rng: np.random.Generator):
    """The recording's channel: none (30 %), the browser's WEBM/Opus (40 %), or a random chain (30 %)."""
    from soundsentry.training.augment import Augmentation, browser_codec_augmentation, random_augmentation

    draw = rng.random()
    if draw < 0.3:
        return Augmentation()
    if draw < 0.7:
        return browser_codec_augmentation(rng)
    return random_augmentation(rng, p_none=0.0)


def build_conversation(
    reals: SpeakerPool, fakes: SpeakerPool, kind: str, num_speakers: int, seed: int, uri: str,
    recipe: ConversationRecipe = CONVERSATION_RECIPE, vad: Callable | None = None, attempts: int = 20,
) -> Conversation:
    """One conversation, rebuilt exactly from ``seed``: its real speakers from one source (a source with
    too few speakers gives way to another), for ``mixed`` one fake speaker in place of one of them: of that
    source when ``fakes`` has one (the devset), else of a generator family drawn uniformly, so that
    families with many voices do not crowd out the others."""
    from soundsentry.training.augment import apply_augmentation

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng(seed)
    vad = vad or SileroVad(REFERENCE_VAD)
    real_count = num_speakers - (kind == "mixed")
    sources = {s: names for s, names in reals.by_source().items() if len(names) >= real_count}
    if not sources:
        raise ValueError(f"no real source has {real_count} speakers")
    fake_names = fakes.names()
    for _ in range(attempts):
        source = sorted(sources)[int(rng.integers(len(sources)))]
        chosen = [str(n) for n in rng.choice(sources[source], size=real_count, replace=False)]
        if kind == "mixed":  # devset: a fake of that source; training side: a family, then one of its voices
            same_source = [n for n in fake_names if fakes.source[n] == source]
            if same_source:
                pick_from = same_source
            else:
                families = sorted({fakes.source[n] for n in fake_names})
                family = families[int(rng.integers(len(families)))]
                pick_from = [n for n in fake_names if fakes.source[n] == family]
            chosen.append(pick_from[int(rng.integers(len(pick_from)))])
        files = {name: _some(reals.files.get(name) or fakes.files[name], rng) for name in chosen}
        try:
            item = synthetic_conversation(files, num_speakers, rng, uri, recipe, vad)
        except ValueError:  # a speaker without clean speech: draw again
            continue
        channel = draw_channel(rng)
        samples = apply_augmentation(item.samples, channel, rng)
        names = {lbl: lbl.split("_", 1)[1] for lbl in item.reference.labels()}  # labels are spk<i>_<name>
        fake = frozenset(lbl for lbl, name in names.items() if name in fakes.files)
        sources = {lbl: (fakes.source if lbl in fake else reals.source)[name] for lbl, name in names.items()}
        return Conversation(uri, kind, samples, item.reference, fake, channel.describe(), seed, sources)
    raise ValueError(f"no usable {kind} conversation of {num_speakers} speakers after {attempts} draws")


def iter_conversations(
    reals: SpeakerPool, fakes: SpeakerPool, count: int, seed: int = 0, prefix: str = "conv",
    recipe: ConversationRecipe = CONVERSATION_RECIPE,
) -> Iterator[Conversation]:
    """``count`` conversations, one at a time: mixed and control alternating, speakers cycling
    min..max; conversation ``i`` is seeded with ``seed * 100003 + i``."""
    vad = SileroVad(REFERENCE_VAD)
    span = recipe.max_speakers - recipe.min_speakers + 1
    for index in range(count):
        yield build_conversation(
            reals, fakes, KINDS[index % 2], recipe.min_speakers + (index // 2) % span, seed * 100003 + index,
            f"{prefix}{seed}_{index:04d}", recipe, vad,
        )


def build_conversations(
    reals: SpeakerPool, fakes: SpeakerPool, count: int, seed: int = 0, prefix: str = "conv",
    recipe: ConversationRecipe = CONVERSATION_RECIPE,
) -> list[Conversation]:
    """:func:`iter_conversations` as a list."""
    return list(iter_conversations(reals, fakes, count, seed, prefix, recipe))


def write_conversations(conversations: Sequence[Conversation], directory: Path) -> Path:
    """Audio (FLAC), one RTTM per conversation and ``conversations.csv`` (uri, kind, fake labels, channel,
    seed) under ``directory``; returns the CSV's path."""
    import soundfile

    from soundsentry.evaluation.evaluate_diarization import write_rttm

    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for conversation in conversations:
        soundfile.write(directory / f"{conversation.uri}.flac", conversation.samples, SAMPLE_RATE)
        write_rttm(conversation.reference, directory / f"{conversation.uri}.rttm")
        rows.append({
            "uri": conversation.uri, "kind": conversation.kind, "speakers": len(conversation.reference.labels()),
            "fake_labels": " ".join(sorted(conversation.fake_labels)),
            "fake_source": " ".join(sorted({conversation.sources[lbl] for lbl in conversation.fake_labels})),
            "channel": conversation.channel,
            "seed": conversation.seed, "duration_s": f"{conversation.duration_s:.2f}",
        })
    path = directory / "conversations.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["uri"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------
# judging conversations: the served path once, every roll-up on the same speakers


@dataclass(frozen=True)
class JudgedConversation:
    """One conversation through the detector, before any recording-aware roll-up.

    ``speakers``: the detector's speakers judged alone; ``fake_share``: for each, the share of its speech
    that is the fake reference speaker's; ``matched``: each reference label → the speaker with most of
    its speech (``None`` when none has any); ``der``: diarization error rate against the reference.
    """

    uri: str
    kind: str
    mode: str  # "diarized" (the service's diarizer) | "oracle" (the reference turns)
    fake_source: str | None  # the fake speaker's generator family (mixed) or source
    speakers: list[SpeakerResult]
    recording_probability: float
    fake_share: dict[str, float]
    matched: dict[str, str | None]
    fake_labels: frozenset[str]
    der: float
    segments: tuple[SegmentResult, ...] = ()  # every scored segment, with each member's P(fake)


def judge(detector, conversation: Conversation, mode: str = "diarized") -> JudgedConversation:
    """Run ``detector``'s models, without its roll-up, on ``conversation``: diarized, or on the reference
    turns."""
    from soundsentry.audio import Waveform
    from soundsentry.detector import Detector
    from soundsentry.evaluation.evaluate_diarization import der_components

    if detector.rollup is not None:  # the same loaded models, every speaker judged alone
        detector = Detector(detector.config, detector.speech, detector.members, detector.fusion)
    waveform = Waveform(conversation.samples)
    report = (detector.predict(waveform, use_diarization=True) if mode == "diarized"
              else detector.predict(waveform, turns=conversation.reference))
    hypothesis = Annotation(uri=conversation.uri)
    for segment in report.segments:
        hypothesis[Segment(segment.start, segment.end), len(hypothesis)] = segment.speaker
    reference = conversation.reference
    overlap = _overlap(reference, hypothesis)  # (reference label, speaker) → seconds
    share = {}
    for speaker in hypothesis.labels():
        total = sum(v for (_, h), v in overlap.items() if h == speaker)
        fake = sum(v for (r, h), v in overlap.items() if h == speaker and r in conversation.fake_labels)
        share[speaker] = fake / total if total > 0 else 0.0
    matched = {}
    for label_ in reference.labels():
        own = {h: v for (r, h), v in overlap.items() if r == label_ and v > 0}
        matched[label_] = max(own, key=own.get) if own else None
    uem = Timeline([Segment(0.0, conversation.duration_s)], uri=conversation.uri)
    der = der_components(reference, hypothesis, uem)["diarization error rate"]
    fake_source = next((conversation.sources[lbl] for lbl in sorted(conversation.fake_labels)), None)
    return JudgedConversation(conversation.uri, conversation.kind, mode, fake_source, report.speakers,
                              report.mean_probability, share, matched, conversation.fake_labels, der,
                              tuple(report.segments))


def _overlap(reference: Annotation, hypothesis: Annotation) -> dict[tuple[str, str], float]:
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for ref_segment, _, ref_label in reference.itertracks(yield_label=True):
        for hyp_segment, _, hyp_label in hypothesis.crop(ref_segment).itertracks(yield_label=True):
            seconds[(ref_label, hyp_label)] += (hyp_segment & ref_segment).duration
    return dict(seconds)


@dataclass(frozen=True)
class Outcome:
    """One conversation's verdict under one roll-up."""

    uri: str
    kind: str
    called_fake: bool
    clone_caught: bool | None  # mixed only: the speaker holding most of the clone's speech called Fake
    speakers_right: int  # reference speakers whose matched speaker's verdict is theirs
    speakers: int
    der: float
    margin: float  # the most-fake counted speaker's logit over its threshold's: > 0 is a Fake verdict
    clone_first: bool | None = None  # mixed only: the clone's speaker has the highest P(fake) of the counted ones

    @property
    def right(self) -> bool:
        return self.called_fake == (self.kind == "mixed")


def outcome(judged: JudgedConversation, rollup: ConversationRollup | None = None) -> Outcome:
    """The verdicts ``judged`` gets with ``rollup`` (``None``: every speaker alone, today's roll-up)."""
    speakers = judged.speakers if rollup is None else rollup.apply(judged.speakers, judged.recording_probability)
    overall, _, _ = overall_verdict(speakers)
    by_name = {s.speaker: s for s in speakers}
    right = 0
    caught = None
    for label_, speaker in judged.matched.items():
        is_fake = label_ in judged.fake_labels
        called = speaker is not None and by_name[speaker].result == "Fake"
        right += called == is_fake
        if is_fake:
            caught = called
    if judged.kind == "mixed" and caught is None:
        caught = False
    counted = [s for s in speakers if s.counted]
    margin = max(float(logit(s.probability) - logit(s.threshold)) for s in counted)
    first = None
    if judged.kind == "mixed":
        clone = next((judged.matched[lbl] for lbl in judged.fake_labels), None)
        first = clone is not None and max(counted, key=lambda s: s.probability).speaker == clone
    return Outcome(judged.uri, judged.kind, overall == "Fake", caught if judged.kind == "mixed" else None,
                   right, len(judged.matched), judged.der, margin, first)


def summarise_outcomes(outcomes: Sequence[Outcome], seed: int = 0) -> dict[str, Any]:
    """Conversation verdicts right, clones caught, controls called Real, reference speakers judged right,
    mixed conversations whose clone has the highest P(fake) of its recording (each a rate with a bootstrap
    interval over conversations) and the mean DER."""
    from soundsentry.evaluation.metrics import bootstrap_rate

    uris = np.array([o.uri for o in outcomes])
    mixed = [o for o in outcomes if o.kind == "mixed"]
    controls = [o for o in outcomes if o.kind == "control"]
    speaker_hits = np.concatenate([[True] * o.speakers_right + [False] * (o.speakers - o.speakers_right)
                                   for o in outcomes]) if outcomes else np.zeros(0, bool)
    speaker_clusters = np.concatenate([[o.uri] * o.speakers for o in outcomes]) if outcomes else np.zeros(0)
    return {
        "conversations": len(outcomes),
        "verdict_right": bootstrap_rate(np.array([o.right for o in outcomes]), uris, seed=seed),
        "clones_caught": bootstrap_rate(np.array([bool(o.clone_caught) for o in mixed]),
                                        np.array([o.uri for o in mixed]), seed=seed),
        "controls_real": bootstrap_rate(np.array([not o.called_fake for o in controls]),
                                        np.array([o.uri for o in controls]), seed=seed),
        "speakers_right": bootstrap_rate(speaker_hits, speaker_clusters, seed=seed),
        "clone_ranked_first": bootstrap_rate(np.array([bool(o.clone_first) for o in mixed]),
                                             np.array([o.uri for o in mixed]), seed=seed),
        "der": float(np.mean([o.der for o in outcomes])) if outcomes else float("nan"),
    }


def conversation_auc(outcomes: Sequence[Outcome], paired: Sequence[Outcome] | None = None, resamples: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """How well the conversations' ``margin`` ranks mixed above controls, at every threshold at once: the
    ROC AUC with a 95 % bootstrap interval over conversations; with ``paired`` (the same conversations
    under another roll-up, same order) also the difference ``outcomes - paired`` and its interval."""
    from sklearn.metrics import roc_auc_score

    labels = np.array([o.kind == "mixed" for o in outcomes])
    scores = np.array([o.margin for o in outcomes])
    other = np.array([o.margin for o in paired]) if paired is not None else None
    if labels.all() or not labels.any():
        return {"auc": float("nan"), "interval": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    mixed, controls = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws, differences = [], []
    for _ in range(resamples):  # stratified: each resample keeps both kinds
        index = np.concatenate([rng.choice(mixed, mixed.size), rng.choice(controls, controls.size)])
        draws.append(roc_auc_score(labels[index], scores[index]))
        if other is not None:
            differences.append(draws[-1] - roc_auc_score(labels[index], other[index]))
    body = {"auc": float(roc_auc_score(labels, scores)), "interval": np.quantile(draws, [0.025, 0.975]).tolist()}
    if other is not None:
        body["minus_paired"] = float(body["auc"] - roc_auc_score(labels, other))
        body["minus_paired_interval"] = np.quantile(differences, [0.025, 0.975]).tolist()
    return body
