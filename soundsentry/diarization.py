"""Who spoke when: the embedded diarizer (offline, no token), output as a pyannote ``Annotation``.

Speech regions from the VAD → 1.6 s windows every ``hop_s`` seconds → Resemblyzer d-vectors →
agglomerative clustering on cosine distance with a distance threshold (so the number of speakers
is estimated, not fixed) → tiny clusters folded into their nearest neighbour → each 0.1 s step of
speech takes the label of the window centred nearest to it → runs of one label become turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyannote.core import Annotation, Segment
from sklearn.cluster import AgglomerativeClustering

from soundsentry.encoder import SAMPLE_RATE, SpeakerNetwork
from soundsentry.vad import SpeechRegion


@dataclass(frozen=True)
class DiarizerConfig:
    hop_s: float = 0.4  # window hop inside a speech region
    min_region_s: float = 0.4  # regions shorter than this take their neighbours' speaker
    distance_threshold: float = 0.30  # cosine distance, average linkage
    min_cluster_windows: int = 3  # smaller clusters are merged into the closest one
    step_s: float = 0.1  # resolution of the output turns
    min_turn_s: float = 0.3  # shorter runs are absorbed by the neighbouring turn


class EmbeddedDiarizer:
    """Diarization from the shipped speaker network alone."""

    name = "embedded (resemblyzer + agglomerative)"

    def __init__(self, network: SpeakerNetwork, config: DiarizerConfig = DiarizerConfig()) -> None:
        self.network = network
        self.config = config

    def embed(self, samples: np.ndarray, regions: list[SpeechRegion]) -> tuple[np.ndarray, np.ndarray]:
        """d-vectors of windows over the speech. Returns (centres (window,), embeddings (window, 256))."""
        centres, embeddings = [], []
        for region in regions:
            if region.duration < self.config.min_region_s:
                continue
            first = int(region.start * SAMPLE_RATE)
            crop = samples[first : int(region.end * SAMPLE_RATE)]
            windows = self.network.analyse(crop, hop_s=self.config.hop_s)
            length = min(self.network.window_s, region.duration)
            centres.append(region.start + windows.starts + length / 2)
            embeddings.append(windows.embeddings)
        if not centres:
            return np.zeros(0), np.zeros((0, self.network.dimension), dtype=np.float32)
        return np.concatenate(centres), np.concatenate(embeddings)

    def cluster(self, embeddings: np.ndarray) -> np.ndarray:
        """Labels 0..n-1 for each window, the number of speakers estimated from the data."""
        if len(embeddings) < 2:
            return np.zeros(len(embeddings), dtype=int)
        labels = AgglomerativeClustering(
            n_clusters=None,
            distance_threshold=self.config.distance_threshold,
            metric="cosine",
            linkage="average",
        ).fit_predict(embeddings)
        return self._fold_small_clusters(embeddings, labels)

    def _fold_small_clusters(self, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
        counts = np.bincount(labels)
        large = np.flatnonzero(counts >= self.config.min_cluster_windows)
        if large.size == 0:
            return np.zeros_like(labels)
        centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in large])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        small = ~np.isin(labels, large)
        labels = labels.copy()
        if small.any():
            labels[small] = large[np.argmax(embeddings[small] @ centroids.T, axis=1)]
        # relabel by order of first appearance: SPEAKER_00 speaks first
        _, first_seen = np.unique(labels, return_index=True)
        order = labels[np.sort(first_seen)]
        return np.searchsorted(order, labels, sorter=np.argsort(order)) if order.size else labels

    def __call__(self, samples: np.ndarray, regions: list[SpeechRegion], uri: str = "upload") -> Annotation:
        centres, embeddings = self.embed(samples, regions)
        annotation = Annotation(uri=uri)
        if len(centres) == 0:
            for index, region in enumerate(regions):
                annotation[Segment(region.start, region.end), index] = "SPEAKER_00"
            return annotation
        labels = self.cluster(embeddings)
        step = self.config.step_s
        for index, region in enumerate(regions):
            times = np.arange(region.start, region.end, step) + step / 2
            nearest = np.abs(times[:, None] - centres[None, :]).argmin(axis=1)
            frame_labels = self._smooth(labels[nearest], int(round(self.config.min_turn_s / step)))
            boundaries = np.flatnonzero(np.diff(frame_labels)) + 1
            for run in np.split(np.arange(len(times)), boundaries):
                start = max(region.start, times[run[0]] - step / 2)
                end = min(region.end, times[run[-1]] + step / 2)
                annotation[Segment(start, end), (index, int(run[0]))] = f"SPEAKER_{frame_labels[run[0]]:02d}"
        return annotation

    @staticmethod
    def _smooth(frame_labels: np.ndarray, min_run: int) -> np.ndarray:
        """Absorb runs shorter than ``min_run`` steps into the preceding (or following) run."""
        labels = frame_labels.copy()
        if min_run <= 1 or labels.size == 0:
            return labels
        boundaries = np.flatnonzero(np.diff(labels)) + 1
        runs = np.split(np.arange(labels.size), boundaries)
        for i, run in enumerate(runs):
            if len(run) < min_run and len(runs) > 1:
                neighbour = runs[i - 1] if i > 0 else runs[i + 1]
                labels[run] = labels[neighbour[0]]
        return labels
