"""Sound Sentry: is this speech real or AI-generated, per speaker and overall.

>>> from soundsentry import Detector
>>> report = Detector.load().predict_bytes(open("clip.wav", "rb").read(), filename="clip.wav")
>>> report.serialize()["overall"]

The serving path: :mod:`soundsentry.audio` (decoding) → :mod:`soundsentry.speech.vad`,
:mod:`soundsentry.speech.diarization`, :mod:`soundsentry.speech.segments` → :mod:`soundsentry.scorers` (one contract,
one registry) → :mod:`soundsentry.fusion` → :mod:`soundsentry.rollup` → :mod:`soundsentry.report`, with
:mod:`soundsentry.detector` over them.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

from soundsentry.constants import ORT_TELEMETRY_ENV, SAMPLE_RATE, TELEMETRY_ENV

# the telemetry switches: pyannote.audio 4 sends usage metrics by default, and onnxruntime (Silero VAD, the
# segmentation network) its 1DS events; this service never does. Set before anything in the package can
# import either.
os.environ[TELEMETRY_ENV] = "false"
os.environ[ORT_TELEMETRY_ENV] = "1"

try:
    __version__ = metadata.version("soundsentry")
except metadata.PackageNotFoundError:  # run from a checkout that was not installed
    __version__ = "0.0.0+checkout"

if TYPE_CHECKING:
    from soundsentry.detector import Detector, DetectorConfig
    from soundsentry.report import Report

__all__ = ["SAMPLE_RATE", "Detector", "DetectorConfig", "Report", "__version__"]
_LAZY = {"Detector": "soundsentry.detector", "DetectorConfig": "soundsentry.detector", "Report": "soundsentry.report"}


def __getattr__(name: str) -> Any:
    """``Detector``, ``DetectorConfig`` and ``Report`` on first use: ``import soundsentry.constants`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'soundsentry' has no attribute {name!r}")
