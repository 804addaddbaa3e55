"""Dependencies the routes declare: settings and the loaded detector."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.core.config import Settings, get_settings
from soundsentry.detector import Detector
from soundsentry.errors import ServiceUnavailableError


def get_detector(request: Request) -> Detector:
    detector = getattr(request.app.state, "detector", None)
    if detector is None:
        reason = getattr(request.app.state, "load_error", None) or "the models are still loading"
        raise ServiceUnavailableError(f"The detector is not ready: {reason}. Check GET /health and retry.",
                                      error_code="model_not_loaded")
    return detector


SettingsDep = Annotated[Settings, Depends(get_settings)]
DetectorDep = Annotated[Detector, Depends(get_detector)]
