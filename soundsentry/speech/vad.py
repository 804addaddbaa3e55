"""Voice activity detection: where is the speech?

Default backend: Silero VAD, whose ONNX weights ship inside the ``silero-vad`` wheel. We use its
"sequence" export, which scores a block of 32 ms frames in one ONNX Runtime call (no per-frame
Python loop, the GIL released) and carries the LSTM state explicitly, so one loaded model serves
concurrent requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from soundsentry._threads import keep_torch_threads

with keep_torch_threads():  # importing silero_vad calls torch.set_num_threads(1)
    from silero_vad.sequence_vad import SileroVADSequence
    from silero_vad.utils_vad import get_speech_timestamps_from_probs


@dataclass(frozen=True)
class SpeechRegion:
    """A stretch of speech, in seconds from the start of the audio."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def total_duration(regions: list[SpeechRegion]) -> float:
    return float(sum(region.duration for region in regions))


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 300
    speech_pad_ms: int = 60


class SileroVad:
    """Silero VAD over a whole 16 kHz mono waveform.

    Usage
    -----
    >>> vad = SileroVad()
    >>> regions = vad(samples)  # samples: float32 (time,) at 16 kHz
    """

    sample_rate = 16_000
    name = "silero-vad-6 (sequence onnx)"

    def __init__(self, config: VadConfig = VadConfig()) -> None:
        self.config = config
        model_path = resources.files("silero_vad.data").joinpath("silero_vad_16k_sequence.onnx")
        self._model = SileroVADSequence(str(model_path), sampling_rate=self.sample_rate)

    def speech_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Per-frame P(speech), one value per 32 ms frame. ``samples``: float32 (time,)."""
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples of shape (time,), got shape {samples.shape}")
        return self._model.audio_forward(np.ascontiguousarray(samples, dtype=np.float32))

    def __call__(self, samples: np.ndarray, *, probabilities: np.ndarray | None = None) -> list[SpeechRegion]:
        """Speech regions of ``samples``; ``probabilities``: their :meth:`speech_probabilities` when already
        computed (by this model at another threshold: the diarizer's sensitive pass reuses the main one's)."""
        if samples.size == 0:
            return []
        if probabilities is None:
            probabilities = self.speech_probabilities(samples)
        config = self.config
        timestamps = get_speech_timestamps_from_probs(
            probabilities.tolist(),
            sampling_rate=self.sample_rate,
            threshold=config.threshold,
            min_speech_duration_ms=config.min_speech_duration_ms,
            min_silence_duration_ms=config.min_silence_duration_ms,
            speech_pad_ms=config.speech_pad_ms,
            return_seconds=False,
            audio_length_samples=samples.size,
        )
        rate = float(self.sample_rate)
        return [SpeechRegion(item["start"] / rate, item["end"] / rate) for item in timestamps]


def find_speech(
    vad: Callable[[np.ndarray], list[SpeechRegion]], samples: np.ndarray,
) -> tuple[list[SpeechRegion], np.ndarray | None]:
    """``vad``'s speech regions of ``samples``, and Silero's per-frame P(speech) when ``vad`` is Silero, for
    the embedded diarizer's more sensitive pass to reuse (one forward instead of two)."""
    if not isinstance(vad, SileroVad) or samples.size == 0:
        return vad(samples), None
    probabilities = vad.speech_probabilities(samples)
    return vad(samples, probabilities=probabilities), probabilities
