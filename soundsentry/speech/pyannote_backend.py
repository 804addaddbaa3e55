"""The pyannote.audio backend: its speaker-diarization pipeline and the VAD of its segmentation model.

Used instead of the embedded diarizer when a pyannote pipeline is available: a local directory
(``config.yaml`` plus the ``segmentation/``, ``embedding/`` and ``plda/`` sub-folders that
``Pipeline.from_pretrained(directory)`` reads, as ``scripts/entry.py export`` writes it). The service
never downloads one: getting the pipeline is the user's explicit ``export`` step, and loading runs with
the Hugging Face hub switched offline (``HF_HUB_OFFLINE``), so a config that names a hub model fails
with a clear error instead of fetching it.

Audio goes in as pyannote's in-memory input, ``{"waveform": (channel=1, time) tensor,
"sample_rate": 16000, "uri": ...}``: nothing is written to disk. pyannote.audio is imported only
when a pipeline is loaded, with its telemetry switched off first.

Usage
-----
>>> pipeline = load_pipeline(Path("model/speaker-diarization-community-1"))
>>> vad, diarizer = PyannoteVad(pipeline), PyannoteDiarizer(pipeline, source="model/...")
>>> annotation = diarizer(samples, vad(samples))
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyannote.core import Annotation, Segment

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.speech.vad import SpeechRegion, VadConfig

logger = logging.getLogger(__name__)

PIPELINE_ID = "pyannote/speaker-diarization-community-1"
TOKEN_ENV = "HUGGING_FACE_TOKEN"
# what Pipeline.from_pretrained(directory) reads for a community-1 style pipeline
PIPELINE_FILES = (
    "config.yaml",
    "segmentation/pytorch_model.bin",
    "embedding/pytorch_model.bin",
    "plda/xvec_transform.npz",
    "plda/plda.npz",
)


def missing_pipeline_files(directory: Path) -> list[str]:
    """Files of :data:`PIPELINE_FILES` that ``directory`` lacks (all of them when it does not exist).

    A directory whose ``config.yaml`` names its sub-models differently is checked by loading it.
    """
    return [name for name in PIPELINE_FILES if not (directory / name).is_file()]


def load_pipeline(directory: Path) -> Any:
    """Load a speaker-diarization pipeline from a local directory, offline.

    Parameters
    ----------
    directory
        A directory holding ``config.yaml`` (and the sub-model folders it names).

    Raises
    ------
    ModelLoadError
        The directory is incomplete, a checkpoint does not load, or the config names a model that is
        not on this machine.
    """
    directory = Path(directory)
    if not (directory / "config.yaml").is_file():
        raise ModelLoadError(
            f"No pyannote pipeline in {directory}: config.yaml is missing. Export one, on a machine with "
            f"network access, with `{TOKEN_ENV}=hf_... python -m scripts.entry export --output {directory}`."
        )
    os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is first imported: before pyannote
    try:
        from pyannote.audio import Pipeline

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pyannote\.audio.*")
            pipeline = Pipeline.from_pretrained(directory)
    except Exception as error:  # pyannote raises many kinds (OSError, KeyError, HTTP errors, pickling errors)
        raise ModelLoadError(
            f"Cannot load the pyannote pipeline from directory {directory}: {type(error).__name__}: {error}; "
            f"check that it holds {', '.join(PIPELINE_FILES)} (re-run `python -m scripts.entry export`)."
        ) from error
    if pipeline is None:
        raise ModelLoadError(f"pyannote found no pipeline in {directory}; re-run `python -m scripts.entry export`.")
    pipeline.to(torch.device("cpu"))
    return pipeline


def as_pyannote_input(samples: np.ndarray, uri: str) -> dict[str, Any]:
    """pyannote's in-memory input for (time,) float32 16 kHz samples; the tensor shares their memory."""
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (time,), got shape {samples.shape}")
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
    return {"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": uri}


class PyannoteVad:
    """Speech regions from the pipeline's segmentation model: speech where any local speaker is active.

    The model is shared with the diarization pipeline (not loaded twice). ``config`` gives the
    minimum speech and silence durations and the padding, as for Silero VAD.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, pipeline: Any, config: VadConfig | None = None, source: str = "pyannote") -> None:
        from pyannote.audio import Inference
        from pyannote.audio.utils.signal import Binarize

        config = config or VadConfig()
        model = pipeline._segmentation.model
        self.name = f"pyannote segmentation ({source})"
        self.config = config
        self._inference = Inference(
            model,
            duration=model.specifications.duration,
            step=0.1 * model.specifications.duration,
            pre_aggregation_hook=lambda scores: np.max(scores, axis=-1, keepdims=True),
            batch_size=pipeline._segmentation.batch_size,
        )
        self._binarize = Binarize(
            onset=config.threshold,
            offset=config.threshold,
            min_duration_on=config.min_speech_duration_ms / 1000,
            min_duration_off=config.min_silence_duration_ms / 1000,
            pad_onset=config.speech_pad_ms / 1000,
            pad_offset=config.speech_pad_ms / 1000,
        )

    def __call__(self, samples: np.ndarray) -> list[SpeechRegion]:
        duration = samples.size / SAMPLE_RATE
        if duration < 0.02:
            return []
        scores = self._inference(as_pyannote_input(samples, "vad"))
        speech = self._binarize(scores).get_timeline().support()
        return [
            SpeechRegion(max(0.0, segment.start), min(duration, segment.end))
            for segment in speech
            if min(duration, segment.end) > max(0.0, segment.start)
        ]


class PyannoteDiarizer:
    """pyannote's speaker-diarization pipeline behind the embedded diarizer's interface.

    ``regions`` (from the VAD) only short-cut silence: the pipeline finds speech itself.
    """

    def __init__(self, pipeline: Any, source: str = PIPELINE_ID) -> None:
        self.pipeline = pipeline
        self.name = f"pyannote {type(pipeline).__name__} ({source})"

    def __call__(
        self, samples: np.ndarray, regions: list[SpeechRegion], uri: str = "upload", *,
        speech_probabilities: np.ndarray | None = None,  # Silero's; pyannote finds speech itself
    ) -> Annotation:
        if not regions:
            return Annotation(uri=uri)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pyannote\.audio.*")
            output = self.pipeline(as_pyannote_input(samples, uri))
        annotation = getattr(output, "speaker_diarization", output)  # DiarizeOutput, or Annotation (legacy)
        if not isinstance(annotation, Annotation):
            raise TypeError(f"pyannote pipeline returned {type(output).__name__}, not a diarization")
        # the last chunk is zero-padded to the model's duration: nothing may be said after the audio ends
        annotation = annotation.crop(Segment(0.0, samples.size / SAMPLE_RATE), mode="intersection")
        annotation.uri = uri
        return annotation
