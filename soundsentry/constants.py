"""Constants every layer shares, defined once."""

from pathlib import Path

SAMPLE_RATE = 16_000  # Hz: every decoder, VAD, network and scorer works on 16 kHz mono float32
# pyannote.audio 4 sends usage metrics unless this is "false"; importing soundsentry sets it (soundsentry/__init__.py)
TELEMETRY_ENV = "PYANNOTE_METRICS_ENABLED"
# onnxruntime 1.31 starts 1DS telemetry on import (a device id under ~/.cache/Microsoft/DeveloperTools, a
# `.ses` file in $TMPDIR, an HTTP uploader) unless this is set
ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"

# The shipped models: ``data/`` beside the package in a checkout; in an installed wheel pyproject.toml
# puts the same files at ``soundsentry/data/`` (package data), found here wherever it is installed.
_PACKAGE = Path(__file__).resolve().parent
# a checkout's root: where training finds cache/ and ../shared, and the service model/ (optional pyannote models)
CHECKOUT = _PACKAGE.parent
DEFAULT_DATA_DIR = _PACKAGE / "data" if (_PACKAGE / "data" / "fusion.json").is_file() else CHECKOUT / "data"
